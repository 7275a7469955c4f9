"""Metrics: FID/KID on TF-Inception features (see :mod:`benchmark.core.metrics.fid`)."""
from .fid import (FeatureCache, ResizeMode, fid_from_features, inception_features,
                  kid_from_features)
from .inception import INCEPTION_SHA256, find_inception_file, load_inception, verify_sha256

__all__ = [
    "FeatureCache",
    "ResizeMode",
    "fid_from_features",
    "inception_features",
    "kid_from_features",
    "INCEPTION_SHA256",
    "find_inception_file",
    "load_inception",
    "verify_sha256",
]
