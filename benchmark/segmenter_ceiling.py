"""Measurement: train the synthetic datasets' default segmenters and print their ceilings
(``python -m benchmark.segmenter_ceiling``). Application layer: it builds datasets by name."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

import datasets as ds

from .core.segmenters.synthetic import SegmenterSettings, get_segmenter


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic_scenes", "synthetic_objects"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="results/cache")
    for f in dataclasses.fields(SegmenterSettings):
        kind = type(f.default)
        convert = (lambda v: v.lower() in ("1", "true", "yes", "on")) if kind is bool else kind
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=convert, default=f.default)
    args = parser.parse_args(argv)
    settings = SegmenterSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SegmenterSettings)})
    for name in args.datasets:
        cls = {"synthetic_scenes": ds.SyntheticScenes, "synthetic_objects": ds.SyntheticObjects}[name]
        dataset = cls(cls.Options(size=args.size, n_train=args.n_train), Path(args.cache_dir) / "datasets")
        seg = get_segmenter(dataset, "B", Path(args.cache_dir) / "segmenters", seed=args.seed, settings=settings)
        print(f"{name} size {args.size}: {seg.description}")
        print(f"  train time {seg.train_seconds:.1f}s ({'cached' if seg.cached else 'trained now'}); "
              f"per-class IoU {[round(v, 1) for v in seg.ceiling['per_class_IoU']]}")


if __name__ == "__main__":
    main()
