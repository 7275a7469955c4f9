"""Segmentation networks that score label->photo translations (the "FCN scores")."""
from .synthetic import (SegmenterSettings, SegmentationUNet, SyntheticSegmenter, get_segmenter,
                        score_predictions, score_translation, train_segmenter)

__all__ = ["SegmenterSettings", "SegmentationUNet", "SyntheticSegmenter", "get_segmenter",
           "score_predictions", "score_translation", "train_segmenter"]
