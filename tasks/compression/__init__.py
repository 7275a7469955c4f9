"""The compression task: GAN Compression's teacher -> once-for-all student distillation with a
method's patch-wise losses, and the evolution search under a MACs budget (Hneg-SRC Table 3).

``networks``: the supernet, its exported subnets and the distillation mappings; ``teacher``: the
teacher (trained here or loaded); ``search``: the evolution search; ``task``: the training loop and
evaluation; ``evaluation``: the test protocols."""
from . import task  # noqa: F401  (registers the task)
