"""Single-modal unpaired translation task (CUT framework)."""
from . import task  # noqa: F401
