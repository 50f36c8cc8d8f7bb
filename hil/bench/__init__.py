"""Bench mode: the rig instruments that replace the simulated EV and grid when a scenario runs against
real hardware (docs/hil-bench.md).

* :mod:`hil.bench.rig` - the ``RIG.toml`` schema and loader;
* :mod:`hil.bench.ev_emulator` - :class:`~hil.bench.ev_emulator.RelayEvEmulator`, pilot and PP
  resistors switched by GPIO relays;
* :mod:`hil.bench.scpi_load` - :class:`~hil.bench.scpi_load.ScpiLoad`, a SCPI electronic load on a
  serial port;
* :mod:`hil.bench.estop` - :class:`~hil.bench.estop.EStopMonitor`, the emergency-stop input;
* :mod:`hil.bench.safety` - the confirmation flag and the safe stop sequence;
* :mod:`hil.bench.sim_scpi` - a SCPI instrument simulator on a pty, for tests.
"""
