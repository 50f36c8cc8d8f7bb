"""Energy manager tests."""
