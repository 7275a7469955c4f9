"""Segmentation networks that score label->photo translations (the "FCN scores").

``benchmark.core.segmenters.synthetic``: a compact U-Net trained on a synthetic dataset's own labelled
photos, cached, with its ceiling on the real test images (``python -m benchmark.segmenter_ceiling``
measures them). Names are imported lazily.
"""
from __future__ import annotations

import importlib

__all__ = ["SegmenterSettings", "SegmentationUNet", "SyntheticSegmenter", "get_segmenter",
           "score_predictions", "score_translation", "train_segmenter"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".synthetic", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
