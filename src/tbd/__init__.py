"""tbd: a training benchmark and analysis toolkit.

The package root imports no deep-learning framework; framework plugins import theirs only when
a run asks for them (see `tbd.frameworks`).
"""

from tbd.version import __version__

__all__ = ["__version__"]
