"""Bus-level simulators: they answer the same bytes, frames and pin levels the real parts would, so
the real drivers run unchanged against them. :mod:`hal.sim.plant` is the physical world they read."""
