"""Engineer-facing utilities: the bring-up probe, the demo, benchmarks (tools/bench/)."""
