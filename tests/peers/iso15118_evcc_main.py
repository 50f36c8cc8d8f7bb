"""Entry point for the `iso15118` package's EVCC, run with the peer venv's Python (never the project's).

    <peer venv>/bin/python iso15118_evcc_main.py CONFIG.json [--discharge]

It is the package's own ``iso15118.evcc.main`` with three differences the interop tests need:

* Its simulated EV asks ISO 15118-20 DC precharge to 20 kV (``get_present_voltage`` /
  ``get_target_voltage`` return 20 x 10^3 V), which any real charger refuses (FAILED_WrongChargeParameter
  from ours, whose limit is 500 V). :class:`PeerEv` asks for 400 V, a real battery's voltage.
* ``--discharge``: the package's simulated EV always asks to charge under BPT (test-peers.md), so this
  swaps in a small subclass of its ``SimEVController`` whose -20 charge-loop requests carry a negative
  power (an EV giving energy back). Everything else stays the package's own behaviour.
* One line per V2G message, ``PEER <direction> <message name>``, on stdout as the EVCC sends and
  receives them, so the test can see where a session got to without parsing the package's log.

The network interface and the PKI come from the ``.env`` in the working directory, as the package's
own main reads them (NETWORK_INTERFACE, PKI_PATH, ENABLE_TLS_1_3).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from iso15118.evcc import Config, EVCCHandler
from iso15118.evcc.controller.simulator import SimEVController
from iso15118.evcc.evcc_config import load_from_file
from iso15118.shared.exificient_exi_codec import ExificientEXICodec
from iso15118.shared.messages.iso15118_20.common_types import RationalNumber


class PeerEv(SimEVController):
    """The package's simulated EV with a 400 V battery in the -20 DC messages."""

    async def get_present_voltage(self) -> Any:
        return RationalNumber(exponent=0, value=400)

    async def get_target_voltage(self) -> Any:
        return RationalNumber(exponent=0, value=400)

    async def get_scheduled_dc_charge_loop_params(self) -> Any:
        params = await super().get_scheduled_dc_charge_loop_params()
        params.ev_target_voltage = RationalNumber(exponent=0, value=400)
        return params


class DischargingEv(PeerEv):
    """The same EV, but giving power back in the -20 BPT charge loops."""

    async def get_ac_charge_loop_params_v20(self, control_mode: Any, selected_service: Any) -> Any:
        params = await super().get_ac_charge_loop_params_v20(control_mode, selected_service)
        # 7.4 kW back to the grid (negative = discharge, ISO 15118-20 8.3.5.4.3).
        params.ev_present_active_power = RationalNumber(exponent=2, value=-74)
        if hasattr(params, "ev_target_energy_request"):
            params.ev_target_energy_request = RationalNumber(exponent=3, value=-5)
        return params

    async def get_bpt_scheduled_dc_charge_loop_params(self) -> Any:
        params = await super().get_bpt_scheduled_dc_charge_loop_params()
        params.ev_target_current = RationalNumber(exponent=0, value=-20)
        return params

    async def get_bpt_dynamic_dc_charge_loop_params(self) -> Any:
        params = await super().get_bpt_dynamic_dc_charge_loop_params()
        params.ev_target_energy_request = RationalNumber(exponent=3, value=-5)
        return params


class _Tap(ExificientEXICodec):
    """The package's codec, printing each message name as it passes (encode = sent, decode = received)."""

    def encode(self, message: Any, namespace: str) -> bytes:
        print(f"PEER tx {_name(str(message))}", flush=True)
        return bytes(super().encode(message, namespace))

    def decode(self, stream: bytes, namespace: str) -> Any:
        decoded = super().decode(stream, namespace)
        print(f"PEER rx {_name(str(decoded))}", flush=True)
        return decoded


def _name(text: str) -> str:
    """The message's element name from the codec's JSON: the first body key, else the root key."""
    for marker in ('"Body": {"', '"Body":{"'):
        at = text.find(marker)
        if at >= 0:
            rest = text[at + len(marker) :]
            return rest[: rest.find('"')]
    start = text.find('"') + 1
    return text[start : text.find('"', start)] if start else "?"


async def main(config_path: str, discharge: bool) -> None:
    config = Config()
    config.load_envs()
    evcc_config = await load_from_file(config_path)
    controller = (DischargingEv if discharge else PeerEv)(evcc_config)
    await EVCCHandler(evcc_config=evcc_config, iface=config.iface, exi_codec=_Tap(), ev_controller=controller).start()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(sys.argv[1], "--discharge" in sys.argv[2:]))
