"""The HIL rig: EV, grid and site models, the scenario runner, traces and reports."""
