"""Models of what sits around a simulated board: the vehicles it charges."""
