"""Metering beyond the meter chip: signed meter values (OCMF)."""
