"""Harness: the measurement loop, steady-state detection, statistics and launchers."""
