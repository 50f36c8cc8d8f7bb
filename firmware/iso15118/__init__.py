"""ISO 15118 / DIN 70121 high-level communication: EXI codec, transport and session state machines."""
