"""The filter-rescaling symmetry of a batch-normalised network; see :mod:`.invariance`."""

from .invariance import *  # noqa: F403
from .invariance import __all__  # noqa: F401
