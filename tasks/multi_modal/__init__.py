"""Multi-modal, multi-domain translation task (StarGAN v2 framework with a patch-wise loss hook)."""
from . import task  # noqa: F401
