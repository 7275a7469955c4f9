"""Segmentation scores (mIoU / pixAcc / clsAcc) and the synthetic-data segmenter."""
import math

import pytest
import torch

from benchmark.core.errors import BenchmarkError
from benchmark.core.metrics.segmentation import confusion_matrix, segmentation_scores
from benchmark.core.segmenters import synthetic as seg_mod
from benchmark.core.segmenters import SegmenterSettings, get_segmenter, score_translation
from datasets import SyntheticObjects, SyntheticScenes

# Tiny training: a few steps of a width-4 U-Net, well under a second.
TINY = SegmenterSettings(width=4, steps=3, batch_size=4)


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------

def test_scores_of_a_written_out_confusion_matrix():
    conf = torch.tensor([[5, 1, 0],
                         [2, 3, 1],
                         [0, 0, 4]])
    s = segmentation_scores(conf)
    # TP 5, 3, 4; truth (rows) 6, 6, 4; predicted (columns) 7, 4, 5; total 16.
    assert s["pixAcc"] == pytest.approx(100 * 12 / 16)
    assert s["per_class_IoU"] == pytest.approx([100 * 5 / 8, 100 * 3 / 7, 100 * 4 / 5])
    assert s["mIoU"] == pytest.approx(100 * (5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert s["per_class_acc"] == pytest.approx([100 * 5 / 6, 100 * 3 / 6, 100.0])
    assert s["clsAcc"] == pytest.approx(100 * (5 / 6 + 3 / 6 + 1) / 3)


def test_scores_of_a_4x4_label_map_pair_with_ignored_pixels():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [2, 2, 255, 255],
                           [2, 2, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 0],
                         [2, 2, 0, 2],
                         [2, 2, 2, 1]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.dtype == torch.int64
    assert conf.tolist() == [[3, 1, 0], [1, 3, 0], [0, 1, 5]]
    s = segmentation_scores(conf)
    assert s["pixAcc"] == pytest.approx(100 * 11 / 14)
    assert s["mIoU"] == pytest.approx(100 * (3 / 5 + 3 / 6 + 5 / 6) / 3)
    assert s["clsAcc"] == pytest.approx(100 * (3 / 4 + 3 / 4 + 5 / 6) / 3)
    # The same pair as a batch of one (N, H, W) gives the same matrix.
    assert confusion_matrix(pred[None], target[None], 3).tolist() == conf.tolist()


def test_perfect_predictions_score_100():
    target = torch.randint(0, 5, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    s = segmentation_scores(confusion_matrix(target.clone(), target, 5))
    assert (s["mIoU"], s["pixAcc"], s["clsAcc"]) == (100.0, 100.0, 100.0)


def test_class_absent_from_truth_and_prediction_is_excluded_from_miou():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    three = segmentation_scores(confusion_matrix(pred, target, 3))
    four = segmentation_scores(confusion_matrix(pred, target, 4))    # class 3 never occurs
    assert math.isnan(four["per_class_IoU"][3]) and math.isnan(four["per_class_acc"][3])
    assert four["mIoU"] == pytest.approx(three["mIoU"])
    assert four["clsAcc"] == pytest.approx(three["clsAcc"])
    # pix2pix's get_scores (epsilon denominators) averages the absent class in as 0.
    zero = segmentation_scores(confusion_matrix(pred, target, 4), absent="zero")
    assert zero["mIoU"] == pytest.approx(three["mIoU"] * 3 / 4)
    # A class predicted but absent from the truth has IoU 0 and counts in mIoU, not in clsAcc.
    s = segmentation_scores(confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 0]), 4))
    assert s["per_class_IoU"][3] == 0.0 and s["mIoU"] == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert s["clsAcc"] == pytest.approx(50.0)


def test_ignore_index_pixels_are_skipped():
    target = torch.tensor([0, 1, 7, 7, 1])
    base = confusion_matrix(torch.tensor([0, 1, 0, 1, 0]), target, 2, ignore_index=7)
    other = confusion_matrix(torch.tensor([0, 1, 1, 0, 0]), target, 2, ignore_index=7)
    assert base.tolist() == other.tolist() == [[1, 0], [1, 1]]
    assert segmentation_scores(base)["pixAcc"] == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError, match="outside"):                  # 7 is not ignored here
        confusion_matrix(torch.tensor([0, 1, 0, 1, 0]), target, 2)


def test_predictions_outside_the_classes_count_as_wrong():
    target = torch.tensor([0, 1, 1, 2])
    conf = confusion_matrix(torch.tensor([0, 1, 9, -1]), target, 3)
    assert int(conf.sum()) == 4 and int(conf.trace()) == 2
    s = segmentation_scores(conf)
    assert s["pixAcc"] == pytest.approx(50.0)
    assert s["per_class_acc"] == pytest.approx([100.0, 50.0, 0.0])


# --------------------------------------------------------------------------------------------
# segmenter
# --------------------------------------------------------------------------------------------

def _scenes(tmp_path, size=36):
    # 36 is not a multiple of 8: the U-Net pads and crops.
    return SyntheticScenes(SyntheticScenes.Options(size=size, n_train=8, n_test=4), tmp_path / "data")


def _weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_segmenter_is_deterministic_under_a_seed(tmp_path):
    data = _scenes(tmp_path)
    rng_before = torch.random.get_rng_state()
    first = get_segmenter(data, "B", tmp_path / "c1", seed=0, settings=TINY, log=lambda m: None)
    assert torch.equal(torch.random.get_rng_state(), rng_before)      # caller's RNG untouched
    again = get_segmenter(data, "B", tmp_path / "c2", seed=0, settings=TINY, log=lambda m: None)
    other = get_segmenter(data, "B", tmp_path / "c3", seed=1, settings=TINY, log=lambda m: None)
    assert not (first.cached or again.cached or other.cached)
    assert _weights_equal(first, again)
    assert not _weights_equal(first, other)


def test_segmenter_cache_returns_the_stored_model_without_retraining(tmp_path, monkeypatch):
    data = _scenes(tmp_path)
    calls, lines = [], []
    real_train = seg_mod.train_segmenter

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(seg_mod, "train_segmenter", counting)
    first = get_segmenter(data, "B", tmp_path / "cache", seed=0, settings=TINY, log=lines.append)
    assert len(calls) == 1 and any("step 3/3" in line and "loss" in line for line in lines)
    files = list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    second = get_segmenter(data, "B", tmp_path / "cache", seed=0, settings=TINY, log=lines.append)
    assert len(calls) == 1 and second.cached and files[0].stat().st_mtime_ns == mtime
    assert _weights_equal(first, second)
    assert second.ceiling == first.ceiling and second.description == first.description
    # Another seed or setting is another cache entry.
    get_segmenter(data, "B", tmp_path / "cache", seed=1, settings=TINY, log=lines.append)
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_segmenter_predicts_and_scores_translations(tmp_path):
    data = _scenes(tmp_path)
    seg = get_segmenter(data, "B", tmp_path / "cache", seed=0, settings=TINY, log=lambda m: None)
    assert (seg.num_classes, seg.ignore_index) == (8, 255)
    assert "synthetic_scenes" in seg.description and "train B" in seg.description
    test_b = data.split("test", "B")
    images, labels = test_b.images(range(4)), test_b.labels(range(4))
    pred = seg.predict(images)
    assert pred.dtype == torch.int64 and pred.shape == (4, 36, 36)
    assert int(pred.min()) >= 0 and int(pred.max()) < 8
    scores = score_translation(seg, images, labels)
    assert set(scores) == {"mIoU", "pixAcc", "clsAcc"}
    # Scoring the real test photos against their own labels reproduces the stored ceiling.
    for key in scores:
        assert scores[key] == pytest.approx(seg.ceiling[key])
    with pytest.raises(BenchmarkError):
        score_translation(seg, images, labels[:, :-1])


def test_object_segmenter_reports_mask_iou(tmp_path):
    data = SyntheticObjects(SyntheticObjects.Options(size=32, n_train=8, n_test=4), tmp_path / "data")
    seg = get_segmenter(data, "B", tmp_path / "cache", seed=0, settings=TINY, log=lambda m: None)
    assert seg.num_classes == 2 and seg.kind == "object_mask"
    assert {"maskIoU", "pixAcc"} <= set(seg.ceiling)
    test_a = data.split("test", "A")
    scores = score_translation(seg, test_a.images(range(4)), test_a.labels(range(4)))
    assert set(scores) == {"maskIoU", "pixAcc"}
    assert 0.0 <= scores["pixAcc"] <= 100.0
