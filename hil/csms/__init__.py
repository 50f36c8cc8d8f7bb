"""An embedded OCPP Central System (1.6J, 2.0.1, 2.1) for ``evse demo`` and HIL scenarios."""

from hil.csms.records import CsmsCallError, CsmsError, CsmsEvent, CsmsPolicy
from hil.csms.server import EmbeddedCsms

__all__ = ["CsmsCallError", "CsmsError", "CsmsEvent", "CsmsPolicy", "EmbeddedCsms"]
