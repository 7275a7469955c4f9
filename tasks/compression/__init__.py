"""GAN-compression task (Fast GAN Compression with a patch-wise loss hook, Hneg-SRC Table 3): a
ResNet-9 teacher distilled into a once-for-all mobile ResNet supernet, then an evolution search for
the best subnet under a MACs budget. ``networks`` holds the supernet, its exported subnets and the
distillation mappings; ``search`` the evolution search."""
