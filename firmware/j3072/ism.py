"""The PEV's Inverter System Model (ISM) number and the J3072 certification status it carries.

SAE J3072 identifies every certified configuration of onboard inverter hardware and software with a
unique ISM number whose fields are the manufacturer, the system type, the model variant and the
certification status (standards-facts 3.1, after the tnlab.org summary of J3072-2024 Table 1); the PEV
must give the EVSE both its ISM number and its certification status (seed 003, R109).

The exact character layout is in the (non-public) standard. Our J3072 profile (docs/j3072.md) writes the
four fields separated by ``/`` in the PEV's DeviceInformation ``mfModel`` (a String32):
``MFR/TYPE/VARIANT/CERT``, e.g. ``ACME/OBI/7K6A/J3072_202406``. ``CERT`` is the J3072 edition the model
is certified to (``J3072_201505``, ``J3072_202103``, ``J3072_202406``) or ``NONE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CERTIFIED_EDITIONS", "NOT_CERTIFIED", "IsmError", "IsmNumber"]

#: The J3072 editions (standards-facts 3.1: 2015-05, 2021-03, 2024-06). The 2015 edition refers to
#: IEEE 1547-2003; a site chooses which editions it accepts (config ``accepted_editions``).
CERTIFIED_EDITIONS = ("J3072_201505", "J3072_202103", "J3072_202406")
NOT_CERTIFIED = "NONE"
#: DeviceInformation.mfModel is a String32 (IEEE 2030.5 schema).
MAX_LENGTH = 32
_FIELD = re.compile(r"[A-Z0-9]{1,8}")


class IsmError(ValueError):
    """An ISM number that does not follow the profile's layout; the message says which field."""


@dataclass(frozen=True)
class IsmNumber:
    manufacturer: str
    system_type: str
    variant: str
    certification: str  # one of CERTIFIED_EDITIONS or NOT_CERTIFIED

    @classmethod
    def parse(cls, text: str) -> IsmNumber:
        if not isinstance(text, str):
            raise IsmError(f"ISM number must be text, not {type(text).__name__}")
        text = text.strip()
        if not text or len(text) > MAX_LENGTH:
            raise IsmError(f"ISM number must be 1-{MAX_LENGTH} characters, not {len(text)}")
        parts = text.split("/")
        if len(parts) != 4:
            raise IsmError(f"ISM number {text!r} must have 4 fields MFR/TYPE/VARIANT/CERT, not {len(parts)}")
        for name, value in zip(("manufacturer", "system type", "variant"), parts[:3], strict=True):
            if not _FIELD.fullmatch(value):
                raise IsmError(f"ISM number {text!r}: {name} {value!r} must be 1-8 of A-Z 0-9")
        cert = parts[3]
        if cert != NOT_CERTIFIED and cert not in CERTIFIED_EDITIONS:
            raise IsmError(f"ISM number {text!r}: certification {cert!r} is not a J3072 edition or NONE")
        return cls(parts[0], parts[1], parts[2], cert)

    @property
    def certified(self) -> bool:
        return self.certification in CERTIFIED_EDITIONS

    def __str__(self) -> str:
        return f"{self.manufacturer}/{self.system_type}/{self.variant}/{self.certification}"
