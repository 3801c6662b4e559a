"""tbd's version, at the bottom of the layers so that records can carry it."""

__version__ = "0.1.0"
