"""``python -m benchmark perf --official PATH``: this project's CUT / FastCUT training step against the
official one (taesungp/contrastive-unpaired-translation, a local checkout at PATH), in one process.

Both sides train at the same settings: ResNet-9 generator (``ngf``), antialiased down- and upsampling,
3-layer PatchGAN (``ndf``), instance norm, xavier init, batch 1, the official CUT / FastCUT options
(``--CUT_mode``), on images of each requested side. After two warm-up steps each, the timed steps
alternate between the two sides, and the order flips every round (ours, official, official, ours,
...), so that both see the same machine load; the medians and their ratio (ours / official) are
printed and saved as JSON and markdown under ``--out``.

The official model is built as its ``train.py`` builds it (``TrainOptions``, ``create_model``,
``data_dependent_initialize``, ``setup``, ``parallelize``) and stepped with ``set_input`` and
``optimize_parameters`` on one fixed pair of random images. Only its ``models``, ``options``,
``data`` and ``util`` packages are imported (no visualiser, no data loader); nothing of it is copied.
"""
from __future__ import annotations

import contextlib
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from .core.errors import ConfigError

OFFICIAL_MODES = {"cut": "CUT", "fastcut": "FastCUT"}
"""Our preset name -> the official ``--CUT_mode``."""
OFFICIAL_FILES = ("models/cut_model.py", "models/networks.py", "models/patchnce.py",
                  "options/train_options.py", "options/base_options.py", "data/__init__.py", "util/util.py")
OFFICIAL_PACKAGES = ("models", "options", "data", "util")


def check_official_checkout(path) -> Path:
    """The checkout's folder, after checking that it has the official CUT code's files."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"perf --official: '{root}' is not a folder; expected a local checkout of "
                          "https://github.com/taesungp/contrastive-unpaired-translation")
    missing = [f for f in OFFICIAL_FILES if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"perf --official: '{root}' lacks {', '.join(missing)}; expected a checkout of "
                          "taesungp/contrastive-unpaired-translation (its repository root)")
    return root


def import_official(root: Path):
    """The official ``models`` and ``options.train_options`` modules, imported from ``root`` (which is
    put first on ``sys.path``). Refuses when a module of the same name was already imported from
    elsewhere (it would shadow the checkout's)."""
    import importlib
    root = root.resolve()
    for name in OFFICIAL_PACKAGES:
        loaded = sys.modules.get(name)
        if loaded is not None and root not in Path(getattr(loaded, "__file__", "") or "/").resolve().parents:
            raise ConfigError(f"perf --official: a module '{name}' is already imported from "
                              f"{getattr(loaded, '__file__', '?')}, which would shadow the checkout's")
    sys.path.insert(0, str(root))
    try:
        models = importlib.import_module("models")
        train_options = importlib.import_module("options.train_options")
    except ImportError as exc:
        raise ConfigError(f"perf --official: the checkout at '{root}' cannot be imported ({exc}); install "
                          "what its models need (numpy, torchvision, Pillow, packaging)") from exc
    return models, train_options


def official_command_line(mode: str, size, ngf: int, ndf: int, gpu_ids: str, batch_size=1) -> str:
    """The official options of a training run at the compared settings."""
    return (f"--dataroot unused --name perf --model cut --CUT_mode {mode} --gpu_ids {gpu_ids} "
            f"--netG resnet_9blocks --ngf {ngf} --netD basic --n_layers_D 3 --ndf {ndf} "
            f"--normG instance --normD instance --init_type xavier --init_gain 0.02 "
            f"--batch_size {batch_size} --load_size {size} --crop_size {size} --num_threads 0")


class OfficialStep:
    """The official CUT model of ``mode`` ('CUT' or 'FastCUT'), stepped on fixed random images."""

    def __init__(self, models, train_options, mode: str, size: int, ngf: int, ndf: int,
                 device: torch.device, seed: int = 0, batch_size: int = 1):
        gpu_ids = str(device.index or 0) if device.type == "cuda" else "-1"
        cmd = official_command_line(mode, size, ngf, ndf, gpu_ids, batch_size)
        argv = sys.argv
        # CUT's option setter parses sys.argv itself (parse_known_args()): give it the same line.
        sys.argv = ["train.py", *cmd.split()]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                opt = train_options.TrainOptions(cmd_line=cmd).gather_options()
        finally:
            sys.argv = argv
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its networks
            opt.isTrain = True
            opt.gpu_ids = [int(i) for i in gpu_ids.split(",") if int(i) >= 0]
            self.opt = opt
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            images = torch.rand(2, batch_size, 3, size, size, generator=generator) * 2 - 1
            self.data = {"A": images[0].to(device), "B": images[1].to(device),
                         "A_paths": ["a.png"] * batch_size, "B_paths": ["b.png"] * batch_size}
            self.model = models.create_model(opt)
            self.model.data_dependent_initialize(self.data)
            self.model.setup(opt)
            self.model.parallelize()

    def train_step(self) -> None:
        self.model.set_input(self.data)
        self.model.optimize_parameters()


def options_label(options: dict, prefix: str, slug: bool = False) -> str:
    """``prefix`` + the task options as ``key=value`` (joined by ', ', or by '_' with ``slug``); ''
    when there are none."""
    if not options:
        return ""
    items = [f"{k}={v}" for k, v in sorted(options.items())]
    if slug:
        return prefix + "_".join(i.replace("=", "-").replace("_", "").replace(" ", "") for i in items)
    return prefix + ", ".join(items)


def timed(step, sync) -> float:
    started = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - started


def compare_one(models, train_options, method: str, size: int, steps: int, ngf: int, ndf: int,
                device: str, cache_root: str, threads: int, batch_size: int = 1,
                task_options: dict | None = None, warmup: int = 2) -> dict:
    """Median step time of ours (with ``task_options``, e.g. the acceleration options) and of the
    official code for ``method`` at ``size`` and ``batch_size``, interleaved."""
    from .perf import build_perf_task

    ours, device_used = build_perf_task(method, size, batch_size, steps + warmup, ngf, ndf, 9, device, cache_root,
                                        threads, task_options)
    official = OfficialStep(models, train_options, OFFICIAL_MODES[method], size, ngf, ndf, device_used,
                            batch_size=batch_size)
    sync = torch.cuda.synchronize if device_used.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        ours.train_step()
        official.train_step()
    sync()
    times = {"ours": [], "official": []}
    sides = {"ours": ours.train_step, "official": official.train_step}
    for k in range(steps):
        order = ("ours", "official") if k % 2 == 0 else ("official", "ours")
        for side in order:
            times[side].append(timed(sides[side], sync))
    medians = {side: statistics.median(t) for side, t in times.items()}
    return {"method": method, "official_mode": OFFICIAL_MODES[method], "size": size, "batch": batch_size,
            "ours_options": task_options or {}, "steps_timed": steps,
            "ours_s": round(medians["ours"], 4), "official_s": round(medians["official"], 4),
            "ratio": round(medians["ours"] / medians["official"], 3),
            "ours_min_max": [round(min(times["ours"]), 4), round(max(times["ours"]), 4)],
            "official_min_max": [round(min(times["official"]), 4), round(max(times["official"]), 4)],
            "device": str(device_used)}


def run_official_comparison(args) -> list[dict]:
    from .perf import cpu_name

    root = check_official_checkout(args.official)
    methods = args.methods or list(OFFICIAL_MODES)
    unknown = [m for m in methods if m not in OFFICIAL_MODES]
    if unknown:
        raise ConfigError(f"perf --official compares {sorted(OFFICIAL_MODES)} only (the official code's "
                          f"CUT_mode); got {unknown}")
    sizes = args.official_sizes
    if any(s < 16 or s % 8 for s in sizes):
        raise ConfigError(f"perf --official: sizes must be multiples of 8, at least 16; got {sizes}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from .perf import parse_task_options
    task_options = parse_task_options(args.task_option)
    batch, warmup = args.batch_size, getattr(args, "warmup", 2)
    models, train_options = import_official(root)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        for method in methods:
            print(f"[perf --official] {method} at {size}x{size}, batch {batch}, {args.steps} interleaved steps "
                  f"per side{options_label(task_options, ', ours with ')}", file=sys.stderr, flush=True)
            r = compare_one(models, train_options, method, size, args.steps, args.ngf, args.ndf,
                            args.device, str(out_dir / "work"), args.threads, batch, task_options, warmup)
            print(f"[perf --official] {method} {size}x{size}: ours {r['ours_s']:.4f} s, official "
                  f"{r['official_s']:.4f} s, ratio {r['ratio']:.3f}", file=sys.stderr, flush=True)
            results.append(r)
    device = results[0]["device"]
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
    meta = {"torch": torch.__version__, "python": platform.python_version(), "device_name": device_name,
            "cpu_threads": torch.get_num_threads(), "official": str(root), "ngf": args.ngf, "ndf": args.ndf,
            "batch_size": batch, "ours_options": task_options, "warmup": warmup,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    stem = f"perf_official_{device.replace(':', '')}_b{batch}" + options_label(task_options, "_", slug=True)
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [f"# Training step: ours{options_label(task_options, ' with ')} vs the official CUT code, batch {batch} "
             f"({device}: {device_name})", "",
             "| method | size | ours s/step | official s/step | ours / official | ours min - max | official min - max |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['size']} | {r['ours_s']:.4f} | {r['official_s']:.4f} | "
                     f"{r['ratio']:.3f} | {r['ours_min_max'][0]:.4f} - {r['ours_min_max'][1]:.4f} | "
                     f"{r['official_min_max'][0]:.4f} - {r['official_min_max'][1]:.4f} |")
    lines += ["", f"Medians of {args.steps} steps per side, interleaved in one process (order flipped every "
              f"round) after {warmup} warm-up steps each; ResNet-9 ngf {args.ngf}, 3-layer PatchGAN ndf {args.ndf}, "
              f"antialiased, batch {batch}; torch {meta['torch']}, {meta['cpu_threads']} CPU thread(s), "
              f"{meta['time']}. Official command line: "
              f"`{official_command_line('<mode>', '<size>', args.ngf, args.ndf, '-1', batch)}`."]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"saved: {out_dir / (stem + '.json')}, {out_dir / (stem + '.md')}")
    return results

