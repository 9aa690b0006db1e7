"""Compare retractions (``riemann-dnn bench retractions``); see :mod:`.bench`."""

from .bench import *  # noqa: F403
from .bench import __all__, retraction_markdown  # noqa: F401
