"""The synthetic music world: a data set whose truth is known (see world.py)."""
