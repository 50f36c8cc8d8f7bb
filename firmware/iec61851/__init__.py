"""IEC 61851-1 basic charging: the pilot encoding, the connector state table and its timing."""
