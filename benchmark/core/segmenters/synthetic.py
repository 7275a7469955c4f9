"""A small segmentation network for the synthetic datasets: the "FCN" of the FCN scores.

pix2pix / CycleGAN / CUT score label->photo translation with an FCN-8s trained on real Cityscapes
photos: it labels the translated photos, and its labels are compared with the label maps that were
translated (:mod:`benchmark.core.metrics.segmentation`). The synthetic datasets have no such network,
so we train one: a compact U-Net on the dataset's own labelled *real* images of the side that the
translated outputs imitate (side B for an A->B translation: the photos of ``synthetic_scenes``
with their label maps, the striped animals of ``synthetic_objects`` with their object masks).
Its scores on the real test images of that side are its **ceiling**: what a perfect translation
could reach.

Training is deterministic from a seed: weights come from ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng`` (the caller's RNG state is untouched), the data order and flips from a
``torch.Generator`` seeded with the seed, and ``torch.use_deterministic_algorithms(True)`` is on
while training. It always trains on the CPU (the same weights whatever device evaluates) with
``settings.threads`` threads (default 1: the same bits on any core count, and no slowdown from
oversubscribed cores on a loaded machine); the result is bit-identical for the same CPU type and
thread count, while another CPU or thread count can change the last bits of the weights. The trained model is
cached: the state dict, its ceiling and its description in ``cache_dir`` under a hash of a key
holding the dataset identity, the side, the architecture version, the training settings and the
seed (written to a temporary file and moved into place with ``os.replace``), so that every run of
a suite, and every later suite, scores with the same network.

Run ``python -m benchmark.segmenter_ceiling`` to train the default segmenters and print their
ceilings and training times.
"""
from __future__ import annotations

from benchmark.core.atomic import atomic_write
import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.errors import BenchmarkError
from benchmark.core.locks import waiting_lock
from benchmark.core.metrics.segmentation import confusion_matrix, segmentation_scores
from benchmark.core.images import ImageSet, LabelInfo, SplitDataset

__all__ = ["ARCH_VERSION", "SegmenterSettings", "SegmentationUNet", "SyntheticSegmenter",
           "get_segmenter", "train_segmenter", "score_translation", "score_predictions"]

# Bump whenever the network, its input scaling or the training procedure changes.
ARCH_VERSION = 1
ARCH_NAME = "unet"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------

def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SegmentationUNet(nn.Module):
    """A compact U-Net: 3 poolings (receptive field about 70 px), widths w, 2w, 4w, 4w.

    Fully convolutional: any input size works (it is padded to a multiple of 8 and the logits are
    cropped back). Input: images scaled to [-1, 1]; output: logits (N, num_classes, H, W).
    """

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.enc1, self.enc2 = _block(3, w), _block(w, 2 * w)
        self.enc3, self.bottom = _block(2 * w, 4 * w), _block(4 * w, 4 * w)
        self.dec3, self.dec2 = _block(8 * w, 2 * w), _block(4 * w, w)
        self.dec1 = _block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottom(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2.0, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1))
        return self.head(d1)[..., :h, :w]


def _to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise BenchmarkError(f"segmenter: expected uint8 images of shape (N, 3, H, W), got "
                             f"{images.dtype} {tuple(images.shape)}")
    return images.to(device=device, dtype=torch.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# Settings, cache key
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmenterSettings:
    """Training settings (all part of the cache key)."""
    width: int = 16              # U-Net base width (16: about 210k parameters)
    steps: int = 900             # optimiser steps (18 epochs of 400 images)
    batch_size: int = 8
    lr: float = 3e-3             # Adam, cosine decay to 0
    weight_decay: float = 0.0
    crop: int = 64               # images larger than this train on random crops of crop x crop
    flip: bool = True            # random horizontal flips
    class_weight_power: float = 0.5   # cross-entropy class weights: frequency ** -power (0: none)
    threads: int = 1             # CPU threads while training (part of what fixes the bits)

    def validate(self) -> None:
        for name in ("width", "steps", "batch_size", "crop", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BenchmarkError(f"segmenter settings: {name} must be a positive integer, got {value!r}")
        if not (isinstance(self.class_weight_power, (int, float)) and 0 <= self.class_weight_power <= 1):
            raise BenchmarkError(f"segmenter settings: class_weight_power must be in [0, 1], "
                                 f"got {self.class_weight_power!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise BenchmarkError(f"segmenter settings: lr must be positive, got {self.lr!r}")


def cache_key(dataset: SplitDataset, side: str, settings: SegmenterSettings, seed: int) -> dict:
    return {"dataset": dataset.identity, "side": side, "arch": f"{ARCH_NAME}-v{ARCH_VERSION}",
            "settings": dataclasses.asdict(settings), "seed": int(seed)}


def _key_string(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_path(cache_dir: Path | str, dataset: SplitDataset, side: str,
               settings: SegmenterSettings, seed: int) -> Path:
    digest = hashlib.sha256(_key_string(cache_key(dataset, side, settings, seed)).encode()).hexdigest()[:24]
    name = getattr(dataset, "registry_name", type(dataset).__name__)
    return Path(cache_dir) / f"segmenter-{name}-{side}-{digest}.pt"


# --------------------------------------------------------------------------------------------
# The segmenter
# --------------------------------------------------------------------------------------------

class SyntheticSegmenter:
    """A trained segmentation network with its ceiling (scores on the real test images)."""

    def __init__(self, net: SegmentationUNet, label_info: LabelInfo, ceiling: dict, description: str,
                 key: dict, train_seconds: float, cached: bool, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.label_info = label_info
        self.num_classes = len(label_info.class_names)
        self.ignore_index = label_info.ignore_index
        self.ceiling = ceiling
        self.description = description
        self.key = key
        self.train_seconds = train_seconds
        self.cached = cached          # True when loaded from the cache rather than trained now

    @property
    def kind(self) -> str:
        return self.label_info.kind

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Class ids, int64 (N, H, W) on the CPU, of uint8 images (N, 3, H, W)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise BenchmarkError(f"segmenter: expected uint8 images of shape (N, 3, H, W), got "
                                 f"{images.dtype} {tuple(images.shape)}")
        self.net.eval()
        out = [self.net(_to_input(images[s:s + batch_size], self.device)).argmax(1).cpu()
               for s in range(0, images.shape[0], batch_size)]
        if not out:
            return torch.zeros((0, *images.shape[-2:]), dtype=torch.int64)
        return torch.cat(out).to(torch.int64)

    def state_dict(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}


def _summary(label_info: LabelInfo, scores: dict) -> dict:
    """The scores reported for one label kind (flat floats)."""
    if label_info.kind == "object_mask":
        return {"maskIoU": scores["per_class_IoU"][1], "pixAcc": scores["pixAcc"]}
    return {"mIoU": scores["mIoU"], "pixAcc": scores["pixAcc"], "clsAcc": scores["clsAcc"]}


def score_predictions(label_info: LabelInfo, predictions: torch.Tensor, labels: torch.Tensor) -> dict:
    """Flat scores of predicted label maps against the true ones (see :func:`score_translation`)."""
    conf = confusion_matrix(predictions, labels, len(label_info.class_names), label_info.ignore_index)
    return _summary(label_info, segmentation_scores(conf))


def score_translation(segmenter: SyntheticSegmenter, outputs: torch.Tensor, input_labels: torch.Tensor,
                      batch_size: int = 64) -> dict[str, float]:
    """Segmentation-correspondence scores (percent) of translated images.

    ``outputs``: uint8 (N, 3, H, W), the translations of N inputs; ``input_labels``: int (N, H, W),
    the label maps of those inputs (for label->photo: side A's labels, the maps that were
    translated; for synthetic_objects: side A's object masks). The segmenter labels the outputs;
    one confusion matrix over all N images gives, for segmentation labels, ``mIoU``, ``pixAcc``,
    ``clsAcc``; for object masks, ``maskIoU`` (IoU of the object class) and ``pixAcc``.
    """
    if outputs.dim() != 4 or input_labels.dim() != 3 or outputs.shape[0] != input_labels.shape[0] \
            or outputs.shape[-2:] != input_labels.shape[-2:]:
        raise BenchmarkError(f"score_translation: outputs {tuple(outputs.shape)} and input labels "
                             f"{tuple(input_labels.shape)} do not match; expected (N, 3, H, W) and (N, H, W)")
    return score_predictions(segmenter.label_info, segmenter.predict(outputs, batch_size), input_labels)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _deterministic(threads: int):
    old_det, old_warn = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _batch(images: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, settings: SegmenterSettings,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = images[ids], labels[ids]
    h, w = x.shape[-2:]
    ch, cw = min(settings.crop, h), min(settings.crop, w)
    if (ch, cw) != (h, w):
        tops = torch.randint(0, h - ch + 1, (len(ids),), generator=gen).tolist()
        lefts = torch.randint(0, w - cw + 1, (len(ids),), generator=gen).tolist()
        x = torch.stack([x[i, :, t:t + ch, l:l + cw] for i, (t, l) in enumerate(zip(tops, lefts))])
        y = torch.stack([y[i, t:t + ch, l:l + cw] for i, (t, l) in enumerate(zip(tops, lefts))])
    if settings.flip:
        flip = torch.rand(len(ids), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
    return x, y


def _class_weights(labels: torch.Tensor, num_classes: int, ignore_index: int, power: float) -> torch.Tensor:
    """Cross-entropy weights ``frequency ** -power`` over the training pixels, pixel-weighted mean 1
    (so that rare classes such as poles and persons are learnt at all); absent classes get 0."""
    valid = labels[labels != ignore_index]
    freq = torch.bincount(valid.reshape(-1), minlength=num_classes)[:num_classes].double()
    freq = freq / freq.sum().clamp(min=1)
    weights = torch.where(freq > 0, freq.clamp(min=1e-12) ** -power, torch.zeros_like(freq))
    weights = weights / (weights * freq).sum().clamp(min=1e-12)
    return weights.float()


def train_segmenter(train: ImageSet, label_info: LabelInfo, settings: SegmenterSettings, seed: int,
                    log: Log | None = None, label: str = "segmenter") -> tuple[SegmentationUNet, float]:
    """Train a U-Net on a labelled image set (on the CPU); returns (network in eval mode, seconds)."""
    settings.validate()
    log = log or _stderr
    n = len(train)
    if n == 0:
        raise BenchmarkError(f"{label}: no training images")
    images = train.images(range(n))
    labels = train.labels(range(n)).to(torch.int64)
    num_classes = len(label_info.class_names)
    weights = _class_weights(labels, num_classes, label_info.ignore_index, settings.class_weight_power)
    start, cpu_start = time.monotonic(), time.process_time()
    with _deterministic(settings.threads):
        torch.manual_seed(seed)
        net = SegmentationUNet(num_classes, settings.width)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, settings.steps) / settings.steps)))
        batch = min(settings.batch_size, n)
        per_epoch = n // batch
        order = torch.empty(0, dtype=torch.long)
        net.train()
        last_print, running = start, []
        log(f"  {label}: training {sum(p.numel() for p in net.parameters()) / 1e3:.0f}k-parameter "
            f"U-Net on {n} images, {settings.steps} steps of {batch}")
        for step in range(1, settings.steps + 1):
            pos = (step - 1) % per_epoch
            if pos == 0:
                order = torch.randperm(n, generator=gen)
            x, y = _batch(images, labels, order[pos * batch:(pos + 1) * batch], settings, gen)
            loss = F.cross_entropy(net(_to_input(x, torch.device("cpu"))), y, weight=weights,
                                   ignore_index=label_info.ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running.append(float(loss.detach()))
            now = time.monotonic()
            if now - last_print >= 5.0 or step == settings.steps:
                elapsed = now - start
                eta = elapsed / step * (settings.steps - step)
                log(f"  {label}: epoch {(step - 1) // per_epoch + 1} step {step}/{settings.steps} "
                    f"loss {sum(running) / len(running):.4f} {elapsed:.0f}s elapsed, ETA {eta:.0f}s")
                last_print, running = now, []
        net.eval()
    seconds = time.monotonic() - start
    log(f"  {label}: trained in {seconds:.1f}s ({time.process_time() - cpu_start:.1f}s of CPU time)")
    return net, seconds


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

def _read(path: Path, key_str: str, log: Log) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("key") != key_str:
            raise ValueError("stored key differs")
        return data
    except Exception as exc:  # unreadable, truncated or foreign: retrain and overwrite
        log(f"  segmenter cache {path} unusable ({exc}); retraining")
        return None


def _write(path: Path, data: dict) -> None:
    with atomic_write(path) as f:
        torch.save(data, f)


def _fmt(scores: dict) -> str:
    return " / ".join(f"{k} {v:.1f}" for k, v in scores.items())


def get_segmenter(dataset: SplitDataset, side: str = "B",
                  cache_dir: Path | str = "results/cache/segmenters",
                  device: torch.device | str = "cpu", seed: int = 0, log: Log | None = None,
                  settings: SegmenterSettings | None = None) -> SyntheticSegmenter:
    """The segmenter of ``dataset``'s ``side``, from the cache or trained now (and cached).

    Trained on the side's labelled train images; its ``ceiling`` holds its scores on the side's
    test images (``mIoU``/``pixAcc``/``clsAcc``, or ``maskIoU``/``pixAcc`` for object masks, plus
    ``per_class_IoU``). ``device`` is where it predicts; it always trains on the CPU. ``log``
    receives progress lines (default: stderr).
    """
    log = log or _stderr
    settings = settings or SegmenterSettings()
    settings.validate()
    if side not in ("A", "B"):
        raise BenchmarkError(f"segmenter: side must be 'A' or 'B', got {side!r}")
    train, test = dataset.split("train", side), dataset.split("test", side)
    info = train.label_info
    if info is None or not train.has_labels or not test.has_labels:
        raise BenchmarkError(f"segmenter: dataset {getattr(dataset, 'registry_name', dataset)!r} side "
                             f"{side} has no label maps to train a segmenter on")
    name = getattr(dataset, "registry_name", type(dataset).__name__)
    key = cache_key(dataset, side, settings, seed)
    key_str = _key_string(key)
    path = cache_path(cache_dir, dataset, side, settings, seed)
    data = _read(path, key_str, log)
    cached = data is not None
    if data is None:
        # Two processes at the start of a suite (parallel workers) want the same segmenter: one
        # trains it, the other waits and loads the file it wrote.
        with waiting_lock(path.with_name(path.name + ".lock"),
                          f"  segmenter {name} {side}: another process is training it; waiting for {path}", log):
            data = _read(path, key_str, lambda message: None)  # written meanwhile by the other process?
            cached = data is not None
            if data is None:
                data = _train_and_save(train, test, info, settings, seed, log, name, side, key, path)
    with torch.random.fork_rng(devices=[]):       # building it draws initial weights: keep the
        net = SegmentationUNet(len(info.class_names), settings.width)   # caller's RNG untouched
    net.load_state_dict(data["state_dict"])
    return SyntheticSegmenter(net, info, data["ceiling"], data["description"], key,
                              data["train_seconds"], cached, device)


def _train_and_save(train, test, info: LabelInfo, settings: SegmenterSettings, seed: int, log: Log, name: str,
                    side: str, key: dict, path: Path) -> dict:
    """Train the segmenter, score its ceiling on the test images, write the cache file ``path``;
    returns what the file holds."""
    net, seconds = train_segmenter(train, info, settings, seed, log, label=f"segmenter {name} {side}")
    test_pred = SyntheticSegmenter(net, info, {}, "", key, seconds, False).predict(test.images(range(len(test))))
    conf = confusion_matrix(test_pred, test.labels(range(len(test))), len(info.class_names),
                            info.ignore_index)
    full = segmentation_scores(conf)
    ceiling = {**_summary(info, full), "per_class_IoU": full["per_class_IoU"]}
    shown = {k: v for k, v in ceiling.items() if k != "per_class_IoU"}
    description = (f"synthetic U-Net segmenter trained on {name} train {side} "
                   f"({len(train)} images, seed {seed}), ceiling on test {side}: {_fmt(shown)}")
    data = {"key": _key_string(key), "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "ceiling": ceiling, "description": description, "train_seconds": float(seconds),
            "class_names": list(info.class_names), "kind": info.kind,
            "ignore_index": int(info.ignore_index)}
    _write(path, data)
    log(f"  segmenter {name} {side}: ceiling on test {side} {_fmt(shown)}; saved {path}")
    return data
