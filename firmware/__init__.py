"""The charger firmware: session state machines, energy manager, OCPP uplink, metering, journal."""
