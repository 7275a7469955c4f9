"""Command line: ``python -m benchmark run | plan | report | list | describe | data | perf | weights``."""
from __future__ import annotations

import argparse
import sys

from . import plugins
from .core import registry
from .core.atomic import storage_error
from .core.errors import BenchmarkError, ConfigError
from .core.interrupt import Interrupted, stop_on_signals


def cmd_run(args) -> int:
    from .config import load_suite
    from .progress import SuiteProgress, format_seconds
    from .report import write_report
    from .runner import Runner
    import time

    from .core.weights import check_suite

    if args.dry_run:
        return cmd_plan(args)

    from .core.distributed import from_environment

    suite = load_suite(args.config, args.overrides)
    launcher = suite.settings.launcher.type
    if args.no_wait and launcher == "local":
        raise ConfigError("--no-wait needs a job launcher (launcher: slurm or submitit_local); "
                          "with launcher: local the runs train in this command")
    check_suite(suite)  # every pretrained file the suite needs, before any training
    from .plan import check_plugin_hooks
    from .sanity import meaningless_settings
    check_plugin_hooks(suite)  # a misspelt hook fails now, not at the first training step
    for warning in meaningless_settings(suite):
        print(f"warning: {warning}", file=sys.stderr)
    place = from_environment()  # under torchrun: every rank trains each run; rank 0 logs and reports
    progress = SuiteProgress(0)
    runner = Runner(suite, progress if place.is_main else None, place, redo_broken=args.redo_broken)
    if not place.is_main:
        failures = runner.run_all()
        return 1 if failures else 0
    progress.total_steps = max(1, runner.planned_steps())
    started = time.monotonic()
    where = runner.device if launcher == "local" else f"{launcher} jobs"
    progress.log(f"suite '{suite.name}': {len(suite.tasks)} task(s) x {len(suite.datasets)} dataset(s) x "
                 f"{len(suite.methods)} method(s) x {len(suite.settings.seeds)} seed(s) on {where}; "
                 f"outputs in {suite.output_dir}")
    if launcher == "local":
        failures = runner.run_all()
    else:
        from .launcher import launch
        failures = launch(suite, progress, wait=not args.no_wait, redo_broken=args.redo_broken)
        if args.no_wait:
            return 0
    report = write_report(suite)
    progress.log(f"suite '{suite.name}' took {format_seconds(time.monotonic() - started)}")
    if failures:
        progress.log(f"{len(failures)} run(s) failed or refused (finished runs are kept; rerun to continue):")
        for run_id, message in failures:
            progress.log(f"  {run_id}: {message}")
    print(f"report: {report}")
    return 1 if failures else 0


def cmd_plan(args) -> int:
    """Build every run of the suite without training, check its data folders and pretrained files,
    and print the runs, steps and estimated GPU hours; exit 1 when something the suite needs is missing."""
    from .config import load_suite
    from .plan import format_plan, plan_suite

    plan = plan_suite(load_suite(args.config, args.overrides))
    print(format_plan(plan))
    if plan.problems:
        print(f"error: {len(plan.problems)} problem(s) listed above: the suite cannot run yet", file=sys.stderr)
    return 1 if plan.problems else 0


def cmd_report(args) -> int:
    from .config import load_suite
    from .report import write_report
    suite = load_suite(args.config, args.overrides)
    if suite.settings.launcher.type != "local":
        from .launcher import job_states
        states = job_states(suite)  # the jobs of the last `run` (e.g. after --no-wait)
        if states:
            print(f"jobs of the last run ({suite.launcher_dir / 'jobs.json'}):")
            print("\n".join(f"  {line}" for line in states))
    print(f"report: {write_report(suite)}")
    return 0


def cmd_describe(args) -> int:
    from .describe import configuration_reference, describe
    plugins.load_builtins()
    for plugin in args.plugins or []:
        plugins.load_plugin(plugin)
    if args.reference:
        print(configuration_reference(), end="")
        return 0
    if not args.name:
        raise ConfigError("describe needs a NAME (a method, preset, task, dataset or metric; "
                          "`python -m benchmark list` names them) or --reference")
    print(describe(args.name))
    return 0


def cmd_list(args) -> int:
    plugins.load_builtins()
    for plugin in args.plugins or []:
        plugins.load_plugin(plugin)
    if args.name:  # `list cut`: what the user wants is the description of cut
        return cmd_describe(argparse.Namespace(name=args.name, reference=False, plugins=[]))
    print("methods:")
    for name in registry.METHODS.names():
        cls = registry.METHODS.get(name)
        presets = ", ".join(cls.presets) or "-"
        print(f"  {name:<14} {registry.describe(cls)}  [presets: {presets}]")
    print("tasks:")
    for name in registry.TASKS.names():
        print(f"  {name:<14} {registry.describe(registry.TASKS.get(name))}")
    print("datasets:")
    for name in registry.DATASETS.names():
        print(f"  {name:<18} {registry.describe(registry.DATASETS.get(name))}")
    return 0


def cmd_data(args) -> int:
    from . import data
    if args.action == "list":
        print(data.format_sources())
        return 0
    if not args.name:
        raise ConfigError("data get needs a NAME; `python -m benchmark data list` shows them")
    folder = data.get(data.source(args.name), args.root)
    print(f"dataset folder: {folder}")
    return 0


def cmd_perf(args) -> int:
    if args.official is not None:
        from .perf_official import run_official_comparison
        run_official_comparison(args)
        return 0
    from .perf import run_perf
    run_perf(args)
    return 0


def cmd_weights(args) -> int:
    """Table of pretrained files: every known one, or what the suite CONFIG needs. Exit 1 when a
    needed file is missing or wrong (without CONFIG: when any file present is wrong)."""
    from .core import weights

    if args.config:
        from .config import load_suite
        suite = load_suite(args.config, args.overrides)
        weights_dir = args.weights_dir or suite.settings.weights_dir or None
        keys = weights.required_weights(suite)
        print(f"suite '{suite.name}' needs {len(keys)} pretrained file(s); "
              f"weights folder: {weights_dir or '(none set)'}")
    else:
        if args.overrides:
            print("error: overrides need a CONFIG", file=sys.stderr)
            return 2
        weights_dir, keys = args.weights_dir, None
        print(f"every pretrained file the benchmark knows; weights folder: {weights_dir or '(none set)'}")
    rows = weights.status(keys, weights_dir)
    print(weights.format_status_table(rows))
    failed = [r for r in rows if r.state == weights.WRONG or (args.config and not r.ok)]
    for r in failed:
        print(f"error: {r.message}", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate every run of a suite, then write its report")
    run.add_argument("config", help="suite YAML, e.g. configs/quick.yaml")
    run.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. seeds=[0,1]")
    run.add_argument("--dry-run", action="store_true",
                     help="train nothing: the same as `plan` (runs, steps, GPU hours, data and weight checks)")
    run.add_argument("--redo-broken", action="store_true",
                     help="a run whose metrics.json is broken (unparseable, wrong shape): rename that file "
                          "to metrics.json.broken-<time> (never deleted) and do the run again")
    run.add_argument("--no-wait", action="store_true",
                     help="with a job launcher (launcher: slurm): submit the jobs and return; "
                          "`report CONFIG` writes the report once they have ended")
    run.set_defaults(func=cmd_run)
    pln = sub.add_parser("plan", help="build every run of a suite without training, check its data folders "
                                      "and pretrained files, print runs, steps and estimated GPU hours")
    pln.add_argument("config")
    pln.add_argument("overrides", nargs="*")
    pln.set_defaults(func=cmd_plan)
    rep = sub.add_parser("report", help="(re)write the markdown report of a suite from its finished runs")
    rep.add_argument("config")
    rep.add_argument("overrides", nargs="*")
    rep.set_defaults(func=cmd_report)
    lst = sub.add_parser("list", help="registered methods (with presets), tasks and datasets")
    lst.add_argument("name", nargs="?", help="a name to describe (the same as `describe NAME`)")
    lst.add_argument("--plugins", nargs="*", help="extra plugin modules or .py files to load first")
    lst.set_defaults(func=cmd_list)
    dsc = sub.add_parser("describe", help="a method, preset, task, dataset or metric: its options (type, "
                                          "default, meaning), presets, and which tasks accept it and why")
    dsc.add_argument("name", nargs="?", help="e.g. fastcut, single_modal, unaligned_folder, FID")
    dsc.add_argument("--reference", action="store_true",
                     help="print the whole configuration reference (docs/configuration.md)")
    dsc.add_argument("--plugins", nargs="*", help="extra plugin modules or .py files to load first")
    dsc.set_defaults(func=cmd_describe)
    dat = sub.add_parser("data", help="public datasets of the paper configs: `data list`, `data get NAME "
                                      "[--root DIR]` (download, sha256, resume, unpack into the reader's layout)")
    dat.add_argument("action", choices=["get", "list"])
    dat.add_argument("name", nargs="?", help="a dataset of `data list`, e.g. horse2zebra")
    dat.add_argument("--root", default="data", help="folder that receives the dataset folder (default: ./data)")
    dat.set_defaults(func=cmd_data)
    perf = sub.add_parser("perf", help="measure training step time and peak memory per method")
    perf.add_argument("--methods", nargs="*", default=None, help="method or preset names (default: all presets)")
    perf.add_argument("--size", type=int, default=64, help="image resolution")
    perf.add_argument("--batch-size", type=int, default=1)
    perf.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    perf.add_argument("--ngf", type=int, default=64)
    perf.add_argument("--ndf", type=int, default=64)
    perf.add_argument("--n-blocks", type=int, default=9)
    perf.add_argument("--device", default="auto")
    perf.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    perf.add_argument("--task-option", nargs="*", default=[], metavar="KEY=VALUE",
                      help="more single-modal task options, e.g. n_layers_D=1 antialias=false")
    perf.add_argument("--out", default="results/perf", help="folder for perf_<device>_<size>.json / .md")
    perf.add_argument("--without-feature-reuse", action="store_true",
                      help="also time each method with the keys encoded again instead of taken from the "
                           "translation pass, steps interleaved (docs/speed.md)")
    perf.add_argument("--official", metavar="PATH", default=None,
                      help="a local checkout of taesungp/contrastive-unpaired-translation: time its CUT and "
                           "FastCUT steps against ours at the same settings, interleaved in one process")
    perf.add_argument("--warmup", type=int, default=2,
                      help="untimed steps before the timed ones (--official; compiled steps need more)")
    perf.add_argument("--official-sizes", nargs="+", type=int, default=[64, 128], metavar="SIZE",
                      help="image sides compared with --official")
    perf.set_defaults(func=cmd_perf)
    wts = sub.add_parser("weights", help="pretrained files: every known one, or those CONFIG needs, "
                                         "with their state and where to put missing ones")
    wts.add_argument("config", nargs="?", help="suite YAML (optional)")
    wts.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    wts.add_argument("--weights-dir", default=None,
                     help="weights folder to look in (default: the config's weights_dir)")
    wts.set_defaults(func=cmd_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            return args.func(args)
    except Interrupted as exc:  # the run in training wrote its checkpoint first
        print(f"\n{exc}", file=sys.stderr)
        return exc.exit_code
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk where no caller named the file's purpose
        error = storage_error(exc, exc.filename or ".")
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
