# Runs INSIDE MicroPython: the exact memory probe `evse mcu deploy` runs on the board
# (firmware/mcu_deploy.py MEMORY_PROBE, passed in as the global PROBE by the test). MicroPython subset.
exec(PROBE)  # noqa: F821
