"""Hardware abstraction layer: typed interfaces, real drivers and bus-level simulators.

Layering: ``hal`` imports nothing from ``firmware`` or ``board``. Drivers take already opened bus
objects (a gpiozero pin factory, an SPI device, a python-can bus, a pyserial port), so the same driver
code runs on a real board and against the simulators in :mod:`hal.sim`.
"""
