"""Exceptions of the EXI codec: every failure is one of these, naming what is wrong and where."""


class ExiError(ValueError):
    """Base class: the message names the problem and the element path (e.g. ``V2G_Message/Body``)."""


class ExiEncodeError(ExiError):
    """The tree does not fit the schema (unknown or missing element, wrong type, value out of range)."""


class ExiDecodeError(ExiError):
    """The byte stream is not a valid EXI stream for the grammar (truncated, oversized or garbage)."""
