"""Method plugins. Importing this package registers the built-in methods."""
from . import cut, flsesim, graphcl, hnegsrc, negcut, none  # noqa: F401
from .base import Method, OptimizerDefaults, TranslationPair  # noqa: F401
