"""The OCPP uplink: a charging-station client per board (1.6J, 2.0.1, with the 2.1 message set wired),
its persistent outbox, configuration, local authorisation and smart charging."""
