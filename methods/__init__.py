"""Method plugins. Importing this package registers the built-in methods."""
from . import cut, cyclegan, flsesim, graphcl, hnegsrc, negcut, none  # noqa: F401
from .base import CYCLE_CONSISTENCY, CycleConsistency, Method, OptimizerDefaults, TranslationPair  # noqa: F401
