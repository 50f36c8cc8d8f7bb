"""ISO 15118 / DIN 70121 sessions: one pure state machine per protocol, driven by decoded requests."""
