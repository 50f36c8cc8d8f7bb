"""Board files: one TOML file per board (``board/*.toml``), validated by :mod:`board.schema`,
loaded by :mod:`board.loader` and turned into live HAL objects by :mod:`board.build`."""
