"""i2i-bench: a benchmark suite for patch-wise contrastive unpaired image-to-image translation."""

__version__ = "0.1.0"
