"""Pure-Python schema-informed EXI codec for SupportedAppProtocol, DIN 70121, ISO 15118-2 and -20."""

from .codec import ExiCodec, codec
from .errors import ExiDecodeError, ExiEncodeError, ExiError
from .namespaces import Namespace

__all__ = ["ExiCodec", "ExiDecodeError", "ExiEncodeError", "ExiError", "Namespace", "codec"]
