"""The single-image task (SinCUT): registered on import."""
from . import task  # noqa: F401
