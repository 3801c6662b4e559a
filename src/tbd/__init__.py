"""tbd: a training benchmark and analysis toolkit.

The package root imports no deep-learning framework; adapters import theirs only when a run
asks for them (see `tbd.registry`).
"""

__version__ = "0.1.0"
