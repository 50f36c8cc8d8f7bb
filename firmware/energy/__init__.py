"""The energy manager: arbitration, site load balancing, EMS interfaces, DER functions."""
