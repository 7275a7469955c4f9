"""Segmentation scores: confusion matrix, mIoU, pixel accuracy and class accuracy.

These are the "FCN scores" with which pix2pix, CycleGAN and CUT judge label->photo translation: a
segmentation network labels the translated photos and its output is compared with the label maps
that were translated. One confusion matrix is accumulated over the whole test set (not averaged
per image), then

* per-class IoU  = TP / (TP + FP + FN)
* mIoU           = mean of the per-class IoUs (CUT's tables call it "mAP")
* pixAcc         = trace / total  (pixel accuracy)
* clsAcc         = mean over classes of TP / (TP + FN)  (class accuracy)

all in percent, with rows = ground truth and columns = prediction.

Checked against ``scripts/eval_cityscapes/util.py`` of junyanz/pytorch-CycleGAN-and-pix2pix
(``fast_hist`` and ``get_scores``, used by ``evaluate.py``, which sums ``fast_hist`` over every
frame) and against ``cityscapesscripts/evaluation/evalPixelLevelSemanticLabeling.py`` of
mcordts/cityscapesScripts. The formulas and the whole-set accumulation are the same; where they
differ:

1. **Classes absent from the data.** pix2pix's ``get_scores`` divides by ``denominator + 1e-12``, so
   a class absent from both truth and prediction gets IoU 0 (not NaN) and *is* averaged into mIoU
   as 0, and a class absent from the truth gets accuracy 0 in clsAcc. cityscapesScripts returns NaN
   for a zero denominator and averages only the valid entries. We follow cityscapesScripts by
   default (``absent="exclude"``): a class absent from both truth and prediction is left out of
   mIoU, and a class absent from the truth is left out of clsAcc (a class predicted but absent from
   the truth still has IoU 0 and counts). ``absent="zero"`` reproduces ``get_scores`` bit for bit
   (epsilon included). On Cityscapes' 500 validation frames every one of the 19 classes occurs, so
   both give the same numbers there.
2. **Truth outside [0, C).** ``fast_hist`` silently drops every pixel whose truth is outside
   ``[0, n)`` (that is how the 255 "ignore" pixels go). We drop exactly the ``ignore_index`` pixels
   and raise ``ValueError`` for any other out-of-range truth value, which is always a bug (a wrong
   ``num_classes`` or label encoding).
3. **Predictions outside [0, C).** ``fast_hist`` does not guard them (a prediction >= n would spill
   into the next row or make it drop the whole frame; it never happens there because predictions
   are an argmax). cityscapesScripts counts them as false negatives of the true class and as false
   positives of no evaluated class. A (C, C) matrix has no column for "no class", so we record such
   a pixel as a confusion with the next class, column ``(truth + 1) % C``: it is wrong for pixAcc,
   clsAcc and the true class's IoU, and it adds one false positive to that neighbouring class. A
   segmenter's argmax never produces them, so benchmark numbers are unaffected.
"""
from __future__ import annotations

from typing import Literal

import torch

__all__ = ["confusion_matrix", "segmentation_scores"]

Absent = Literal["exclude", "zero"]


def _as_int_tensor(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype.is_complex:
        raise ValueError(f"confusion_matrix: {name} has dtype {t.dtype}; expected integer class ids")
    return t.reshape(-1).to(torch.int64)


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> torch.Tensor:
    """Pixel confusion matrix, ``torch.int64`` of shape (C, C): rows = truth, columns = prediction.

    ``pred`` and ``target`` hold integer class ids of the same shape (any number of dimensions, e.g.
    (N, H, W)). Pixels whose truth equals ``ignore_index`` are skipped (``None``: skip none).
    A prediction outside ``[0, C)`` counts as wrong (see the module docstring, point 3); a truth
    outside ``[0, C)`` other than ``ignore_index`` raises ``ValueError``. Sum the matrices of
    several batches to score a whole set.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be a positive integer, got {num_classes!r}")
    p, t = torch.as_tensor(pred), torch.as_tensor(target)
    if p.shape != t.shape:
        raise ValueError(f"confusion_matrix: prediction shape {tuple(p.shape)} differs from target "
                         f"shape {tuple(t.shape)}")
    p, t = _as_int_tensor(p, "pred").cpu(), _as_int_tensor(t, "target").cpu()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    c = num_classes
    bad = (t < 0) | (t >= c)
    if bad.any():
        values = sorted(set(t[bad].unique()[:5].tolist()))
        raise ValueError(f"confusion_matrix: target holds class ids {values} outside [0, {c}) that "
                         f"are not ignore_index={ignore_index}")
    invalid = (p < 0) | (p >= c)
    if invalid.any():
        if c == 1:
            raise ValueError("confusion_matrix: predictions outside [0, 1) cannot be recorded as "
                             "wrong in a 1-class matrix")
        p = torch.where(invalid, (t + 1) % c, p)
    return torch.bincount(t * c + p, minlength=c * c).reshape(c, c)


def segmentation_scores(conf, absent: Absent = "exclude") -> dict:
    """mIoU, pixAcc and clsAcc (percent) of a confusion matrix (rows = truth, cols = prediction).

    Returns ``{"mIoU", "pixAcc", "clsAcc"}`` as floats and ``"per_class_IoU"``,
    ``"per_class_acc"`` as lists of C floats (percent). With ``absent="exclude"`` (default;
    cityscapesScripts) a class absent from both truth and prediction has IoU NaN and is left out of
    mIoU, and a class absent from the truth has accuracy NaN and is left out of clsAcc; the means
    are NaN only when no class is left (an empty matrix). ``absent="zero"`` is pix2pix's
    ``get_scores`` exactly (denominators + 1e-12, so absent classes count as 0).
    """
    if absent not in ("exclude", "zero"):
        raise ValueError(f"segmentation_scores: absent must be 'exclude' or 'zero', got {absent!r}")
    m = torch.as_tensor(conf)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"segmentation_scores: expected a square (C, C) matrix, got {tuple(m.shape)}")
    m = m.to(torch.float64)
    tp = m.diagonal()
    truth, predicted, total = m.sum(1), m.sum(0), m.sum()
    union = truth + predicted - tp
    if absent == "zero":
        eps = 1e-12
        iou, acc = tp / (union + eps), tp / (truth + eps)
        pix = tp.sum() / (total + eps)
    else:
        iou, acc = tp / union, tp / truth          # 0 / 0 = NaN for absent classes
        pix = tp.sum() / total
    return {
        "mIoU": 100.0 * float(torch.nanmean(iou)),
        "pixAcc": 100.0 * float(pix),
        "clsAcc": 100.0 * float(torch.nanmean(acc)),
        "per_class_IoU": [100.0 * float(v) for v in iou],
        "per_class_acc": [100.0 * float(v) for v in acc],
    }
