"""Agents: assemble modules and roll out episodes into trajectories of turns."""
