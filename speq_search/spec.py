"""Deprecated name of :mod:`speq_search.space` (the search space package was ``spec`` before 0.2):
importing it still works, with a warning, and gives the same objects."""

import warnings

from speq_search.space import *  # noqa: F401,F403
from speq_search.space import __all__  # noqa: F401

warnings.warn("speq_search.spec is now speq_search.space", DeprecationWarning, stacklevel=2)
