"""Safety supervision: the fault catalogue and the supervisor that raises and clears faults."""
