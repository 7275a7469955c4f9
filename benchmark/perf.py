"""``python -m benchmark perf``: training step time and peak memory per method.

Each method is measured in a fresh subprocess (so that peak host memory is its own), in the
single-modal task on synthetic data at the requested resolution and batch size. Results are printed
and saved as JSON and markdown under ``--out``.
"""
from __future__ import annotations

import json
import platform
import statistics
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from .config import find_method, suite_from_dict
from .progress import format_seconds
from . import plugins
from .core import registry


def all_presets() -> list[str]:
    plugins.load_builtins()
    names = []
    for name in registry.METHODS.names():
        cls = registry.METHODS.get(name)
        names += list(cls.presets) or [name]
    return names


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def build_perf_task(method: str, size: int, batch_size: int, n_steps: int, ngf: int, ndf: int, n_blocks: int,
                    device: str, cache_root: str, threads: int = 0, task_options: dict | None = None):
    """A single-modal task of ``method`` on synthetic images of side ``size``, built as a run of a
    one-run suite would build it (seed 0): ``(task, device)``. Frozen ImageNet backbones (VGG16) are
    built untrained: the same compute, no weight file needed."""
    from dataclasses import fields

    from .runner import Runner, expand

    cls, _ = find_method(method)
    params = {"vgg_weights": "untrained"} if "vgg_weights" in {f.name for f in fields(cls.Params)} else {}
    suite = suite_from_dict({
        "suite": "perf", "seeds": [0], "device": device, "output_dir": cache_root, "cpu_threads": threads,
        "tasks": {"single_modal": {**(task_options or {}), "ngf": ngf, "ndf": ndf, "n_blocks": n_blocks,
                                    "batch_size": batch_size, "n_steps": n_steps, "n_steps_decay": 0}},
        "datasets": {"synthetic_objects": {"size": size, "n_train": 8, "n_test": 2}},
        "methods": [{"name": method, "params": params}]})
    runner = Runner(suite)
    return runner.build_task(expand(suite)[0]), runner.device


def _timed_step(task, on_cuda: bool) -> float:
    """One training step, timed to its end on the device."""
    started = time.perf_counter()
    task.train_step()
    if on_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure_one(method: str, size: int, batch_size: int, steps: int, ngf: int, ndf: int, n_blocks: int,
                device: str, cache_root: str, threads: int = 0, task_options: dict | None = None,
                without_feature_reuse: bool = False) -> dict:
    """Time ``steps`` training steps after two warm-up steps; peak memory of this process.
    Frozen ImageNet backbones (VGG16) are built untrained: the same compute, no weight file needed.
    ``without_feature_reuse``: also time a twin task that encodes the keys again instead of taking
    them from the translation pass (``ForwardFeatureReuse``), its steps interleaved with the
    task's, so that both see the same machine load (the peak memory is then the two tasks')."""
    cls, _ = find_method(method)
    build = lambda: build_perf_task(method, size, batch_size, steps + 2, ngf, ndf, n_blocks, device,  # noqa: E731
                                    cache_root, threads, task_options)
    task, device_used = build()
    twin = None
    if without_feature_reuse:
        twin, _ = build()
        twin.switch_off_feature_reuse("switched off by perf --without-feature-reuse")
    on_cuda = device_used.type == "cuda"
    for _ in range(2):
        task.train_step()
        if twin is not None:
            twin.train_step()
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, twin_times = [], []
    for _ in range(steps):  # the median resists outliers
        times.append(_timed_step(task, on_cuda))
        if twin is not None:
            twin_times.append(_timed_step(twin, on_cuda))
    seconds = statistics.median(times)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method, "method_type": cls.registry_name, "size": size, "batch_size": batch_size,
        "ngf": ngf, "ndf": ndf, "n_blocks": n_blocks, "device": str(device_used),
        "device_name": torch.cuda.get_device_name(device_used) if on_cuda else cpu_name(),
        "steps_timed": steps,
        "step_seconds": round(seconds, 4), "step_seconds_mean": round(statistics.fmean(times), 4),
        "step_seconds_min": round(min(times), 4), "step_seconds_max": round(max(times), 4),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_cuda else None,
        "peak_host_rss_mb": round(peak_rss_mb, 1), "cpu_threads": torch.get_num_threads(),
        "task_options": task_options or {},
        "feature_reuse": task.feature_reuse.batch_shape is not None,
        **({"step_seconds_without_reuse": round(statistics.median(twin_times), 4),
            "reuse_ratio": round(seconds / statistics.median(twin_times), 3)} if twin is not None else {}),
    }


def parse_task_options(items: list[str]) -> dict:
    """``key=value`` strings (values read as YAML) into single-modal task options."""
    from .core.errors import ConfigError
    from .core.yaml_io import load_yaml
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"perf --task-option {item!r}: expected key=value, e.g. n_layers_D=2")
        options[key] = load_yaml(value)
    return options


def run_perf(args) -> list[dict]:
    methods = args.methods or all_presets()
    task_options = parse_task_options(args.task_option)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.monotonic()
    for i, method in enumerate(methods, 1):
        find_method(method)  # fail early on an unknown name
        print(f"[perf {i}/{len(methods)}] {method} at {args.size}x{args.size}, batch {args.batch_size} "
              f"(elapsed {format_seconds(time.monotonic() - started)})", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "benchmark.perf", json.dumps({
            "method": method, "size": args.size, "batch_size": args.batch_size, "steps": args.steps,
            "ngf": args.ngf, "ndf": args.ndf, "n_blocks": args.n_blocks, "device": args.device,
            "threads": args.threads, "task_options": task_options,
            "without_feature_reuse": args.without_feature_reuse,
            "cache_root": str(out_dir / "work")})]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            results.append({"method": method, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    device = results[0].get("device", args.device) if results else args.device
    stem = f"perf_{device.replace(':', '')}_{args.size}px_b{args.batch_size}"
    if args.without_feature_reuse:
        stem += "_reuse"
    threads = next((r["cpu_threads"] for r in results if "cpu_threads" in r), torch.get_num_threads())
    device_name = next((r["device_name"] for r in results if "device_name" in r), device)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "device_name": device_name,
            "cpu_threads": threads, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [f"# Training step time and peak memory ({args.size}x{args.size}, batch {args.batch_size}, "
             f"ngf {args.ngf}, ndf {args.ndf}, {args.n_blocks} blocks"
             + "".join(f", {k} {v}" for k, v in task_options.items()) + f", {device}: {device_name})", "",
             "| method | s/step (median) | x cut | min - max s/step | peak GPU MB | peak host RSS MB |"
             + (" reuse offered | s/step encoding the keys again | with reuse / without |" if args.without_feature_reuse else ""),
             "|---|---|---|---|---|---|" + ("---|---|---|" if args.without_feature_reuse else "")]
    base = next((r["step_seconds"] for r in results if r.get("method") == "cut" and "step_seconds" in r), None)
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | |")
            continue
        ratio = f"{r['step_seconds'] / base:.2f}" if base else "-"
        row = (f"| {r['method']} | {r['step_seconds']:.4f} | {ratio} | "
               f"{r['step_seconds_min']:.4f} - {r['step_seconds_max']:.4f} | {r['peak_gpu_mb'] or '-'} | "
               f"{r['peak_host_rss_mb']} |")
        if args.without_feature_reuse:
            row += (f" {'yes' if r['feature_reuse'] else 'no'} | {r['step_seconds_without_reuse']:.4f} | "
                    f"{r['reuse_ratio']:.3f} |")
        lines.append(row)
    lines += ["", f"torch {meta['torch']}, {meta['cpu_threads']} CPU thread(s), {args.steps} timed steps after "
              f"2 warm-up steps, {meta['time']}. Frozen VGG16 backbones are untrained here (same compute)."]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"saved: {out_dir / (stem + '.json')}, {out_dir / (stem + '.md')}")
    return results


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure_one(**spec)))
