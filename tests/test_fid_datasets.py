"""FID on real Inception features tells the synthetic domains apart: a test split is much closer to
the training split of its own domain than to the other domain's."""
import numpy as np
import pytest
import torch

from benchmark.core.metrics.fid import fid_from_features, inception_features
from datasets.synthetic import SyntheticObjects

N = 8


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    ds = SyntheticObjects(SyntheticObjects.Options(size=32, n_train=N, n_test=N), tmp_path_factory.mktemp("ds"))
    out = {}
    for split, side in [("train", "B"), ("test", "B"), ("test", "A")]:
        images = ds.split(split, side).images(range(N))
        out[(split, side)] = inception_features(images, resize="legacy", device=torch.device("cpu"))
    return out


def test_same_domain_is_closer_than_the_other_domain(features):
    same = fid_from_features(features[("test", "B")], features[("train", "B")])
    other = fid_from_features(features[("test", "A")], features[("train", "B")])
    assert np.isfinite(same) and same < 0.5 * other
