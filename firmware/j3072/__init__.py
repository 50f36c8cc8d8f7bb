"""SAE J3072 discharge gatekeeping for AC V2G over IEEE 2030.5 (docs/j3072.md)."""
