"""The compression task: GAN Compression's teacher -> once-for-all student distillation with a
method's patch-wise losses, and the evolution search under a MACs budget (Hneg-SRC Table 3)."""
