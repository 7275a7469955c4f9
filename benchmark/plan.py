"""Planning a suite without training (``python -m benchmark plan CONFIG`` or ``run CONFIG --dry-run``):
every run built (its method and task constructed, no network set up), every dataset folder listed
and every image file a run would read opened and decoded (with a progress line), every pretrained
file looked up, the output folder tried with a file and its free space compared with the size of the
checkpoints the runs will write (from their networks' parameter counts), and the cost: runs, training steps and the estimated GPU hours from
the step times measured with ``python -m benchmark perf`` and kept in ``docs/perf/*.json``.

The step-time table is :func:`measured_step_times` (the one reader of those files). A run is matched
by its method (preset name, else the method's name), the task it was measured in (``perf`` times the
single-modal task), batch size and crop size; a run at a size that was not measured uses the nearest
measured size of the same method and batch size and says so, and a run without any measurement of its
method, batch size and task is "unknown" (counted in no total).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import Run, Suite
from .core import weights
from .core.atomic import format_bytes
from .core.errors import BenchmarkError, DataError
from .core.image_io import decode
from .inputs import inputs_of_run
from .progress import CountProgress
from .run_folder import FINISHED, UNFINISHED, State
from .sanity import meaningless_settings

PERF_DIR = Path(__file__).resolve().parents[1] / "docs" / "perf"
"""Where the measured step times live (``perf_<device>_<size>px_b<batch>.json``, see docs/perf/README.md)."""
MEASURED_TASK = "single_modal"
"""The task ``python -m benchmark perf`` times its steps in."""
MEASURED_NETWORK = ("ngf", "ndf", "n_blocks")
"""Task options recorded with each measurement: a run with other values is marked as such."""


@dataclass(frozen=True)
class StepTime:
    """One measured step: median seconds of a training step of ``method`` at ``size`` and ``batch_size``."""
    method: str
    size: int
    batch_size: int
    seconds: float
    device_name: str
    network: tuple[int, int, int]
    """(ngf, ndf, n_blocks) of the measured networks."""
    source: str
    """The file it was read from (relative to the repository)."""


def measured_step_times(perf_dir: Path = PERF_DIR) -> list[StepTime]:
    """Every measurement in ``perf_dir/*.json`` (none when the folder is absent, e.g. in a wheel)."""
    out = []
    for path in sorted(Path(perf_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchmarkError(f"step-time file '{path}' is not readable JSON ({exc}); expected the output of "
                                 "`python -m benchmark perf`") from exc
        device = data.get("meta", {}).get("device_name", "unknown device")
        for r in data.get("results", []):
            if "step_seconds" not in r:  # another kind of measurement (perf --official's ratios)
                continue
            out.append(StepTime(r["method"], int(r["size"]), int(r["batch_size"]), float(r["step_seconds"]),
                                r.get("device_name", device), (r.get("ngf"), r.get("ndf"), r.get("n_blocks")),
                                f"{path.parent.name}/{path.name}" if path.parent.name == "perf" else str(path)))
    return out


@dataclass(frozen=True)
class StepEstimate:
    seconds: float | None
    """Seconds per step, None = unknown."""
    note: str
    """How it was found: exact, the nearest size, or why it is unknown."""
    device_name: str = ""


def run_size(run: Run) -> int | None:
    """The crop size a run trains at (its dataset's ``size``), None when the dataset has none."""
    return getattr(run.dataset.options, "size", None)


def run_batch_size(run: Run) -> int:
    return getattr(run.task_options, "batch_size", 1)


def estimate_step(run: Run, table: list[StepTime]) -> StepEstimate:
    """The measured step time that stands for ``run`` (see the module docstring)."""
    name = run.method.preset or run.method.cls.registry_name
    task = run.task.cls.registry_name
    if task != MEASURED_TASK:
        return StepEstimate(None, f"unknown: task '{task}' not measured (perf times the {MEASURED_TASK} task)")
    batch, size = run_batch_size(run), run_size(run)
    same = [t for t in table if t.method == name and t.batch_size == batch]
    if not same:
        return StepEstimate(None, f"unknown: no measurement of '{name}' at batch size {batch}")
    best = min(same, key=lambda t: (abs(t.size - size) if size else 0, t.size))
    notes = []
    if size is not None and best.size != size:
        notes.append(f"{size}px not measured, nearest {best.size}px used")
    network = tuple(getattr(run.task_options, k, None) for k in MEASURED_NETWORK)
    if network != best.network:
        notes.append("measured with ngf/ndf/n_blocks " + "/".join(map(str, best.network))
                     + ", run uses " + "/".join(map(str, network)))
    if run.method.label != name:
        notes.append(f"'{run.method.label}' timed as '{name}'")
    return StepEstimate(best.seconds, "; ".join(notes) or "measured", best.device_name)


@dataclass
class RunPlan:
    run_id: str
    steps: int
    estimate: StepEstimate
    state: State
    """What the run's folder holds now (finished, stale, broken or unfinished)."""

    @property
    def finished(self) -> bool:
        return self.state.kind == FINISHED

    @property
    def seconds(self) -> float | None:
        return None if self.estimate.seconds is None else self.steps * self.estimate.seconds


@dataclass
class SuitePlan:
    suite: Suite
    runs: list[RunPlan]
    data_problems: list[str] = field(default_factory=list)
    weight_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Settings that make a run's numbers meaningless (benchmark/sanity.py); not problems: it can run."""
    datasets_checked: dict[str, str] = field(default_factory=dict)
    """Dataset label -> what was found (e.g. its identity string)."""
    output_problems: list[str] = field(default_factory=list)
    folder_problems: list[str] = field(default_factory=list)
    """Runs whose folder ``run`` will refuse (stale results of another config, a broken metrics.json)."""
    output_checked: str = ""
    """What was found of the output folder (writable, free space, the checkpoints' estimated size)."""

    @property
    def total_steps(self) -> int:
        return sum(r.steps for r in self.runs)

    @property
    def remaining_steps(self) -> int:
        return sum(r.steps for r in self.runs if not r.finished)

    @property
    def problems(self) -> list[str]:
        return self.data_problems + self.weight_problems + self.output_problems + self.folder_problems

    @property
    def estimated_hours(self) -> float:
        """GPU hours of the runs with a known step time (not yet finished ones)."""
        return sum(r.seconds for r in self.runs if r.seconds is not None and not r.finished) / 3600

    @property
    def unknown_runs(self) -> list[RunPlan]:
        return [r for r in self.runs if r.estimate.seconds is None]

    @property
    def devices(self) -> list[str]:
        return sorted({r.estimate.device_name for r in self.runs if r.estimate.device_name})


def check_datasets(suite: Suite, stream=None) -> tuple[dict[str, str], list[str]]:
    """List every dataset's files, open and decode each image file a run would read
    (``Dataset.source_files``), with a progress line, then take each sound dataset's ``identity``
    (for a folder dataset a digest of every file's content): (label -> identity, problems naming the
    missing folder or file, or the image that does not decode)."""
    built, problems, files = {}, [], []
    for component in suite.datasets:
        try:
            dataset = component.cls(component.options, suite.cache_dir / "datasets")
            files += [(component.label, Path(path)) for path in dataset.source_files()]
            built[component.label] = dataset
        except BenchmarkError as exc:
            problems.append(f"datasets.{component.label}: {exc}")
    progress = CountProgress(len(files), "decoding the datasets' images", stream)
    broken = set()
    for label, path in files:
        try:
            if not path.is_file():
                raise DataError(f"image file '{path.absolute()}' does not exist; expected an image file")
            decode(path)
        except DataError as exc:
            problems.append(f"datasets.{label}: {exc}")
            broken.add(label)
        progress.advance()
    found = {}
    for label, dataset in built.items():
        if label in broken:
            continue
        try:  # after the files: a missing one is named once, by the loop above
            found[label] = dataset.identity
        except BenchmarkError as exc:
            problems.append(f"datasets.{label}: {exc}")
    return found, problems


def checkpoint_bytes(run: Run, task) -> int | None:
    """The size of one checkpoint of ``run``: its checkpoint's when one exists, else its task's
    estimate (None: the task does not say, or its data, which the data check reports, cannot size it)."""
    if run.checkpoint_path.is_file():
        return run.checkpoint_path.stat().st_size
    try:
        return task.checkpoint_size()
    except DataError:
        return None


def check_output(suite: Suite, runs: list[RunPlan], tasks: dict) -> tuple[str, list[str]]:
    """Whether the output folder (or the nearest folder above it that exists) takes a new file, and
    has room for the checkpoints of the unfinished runs (each keeps ``latest.pt`` and one file per
    best-of rule, and a checkpoint being written stands beside the one it replaces): (a line for
    the plan, problems)."""
    output = Path(suite.output_dir).absolute()
    folder = output
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return "", [f"output folder '{output}' cannot be written: creating a file in '{folder}' failed "
                    f"({exc.strerror}); expected a folder you may write to (set output_dir)"]
    validation = suite.settings.validation
    per_run = 1 + (len(validation.rules) if validation.enabled else 0)
    sizes = [checkpoint_bytes(run, tasks[plan.run_id]) for run, plan in zip(suite.runs, runs) if not plan.finished]
    known = sorted((size for size in sizes if size is not None), reverse=True)
    # A checkpoint is written beside the one it replaces and then renamed over it: while each of the
    # runs training at once writes one, its new copy is there too.
    need = per_run * sum(known) + sum(known[:max(1, suite.settings.workers)])
    unknown = sum(size is None for size in sizes)
    free = shutil.disk_usage(folder).free
    line = f"output: {output} writable, {format_bytes(free)} free; "
    if known:
        line += (f"the checkpoints of {len(sizes)} unfinished run(s) need about {format_bytes(need)}"
                 + (f" ({unknown} of unknown size, not counted)" if unknown else ""))
    elif sizes:
        line += (f"the checkpoint size of the {len(sizes)} unfinished run(s) is not known (their task gives no "
                 "estimate, or their data cannot be read)")
    else:
        line += "no unfinished run"
    if need > free:
        return line, [f"output folder '{output}' has {format_bytes(free)} free but the checkpoints of the "
                      f"{len(sizes)} unfinished run(s) need about {format_bytes(need)} ({per_run} file(s) per "
                      "run, and a new copy of the one being written, at 12 bytes per trained parameter and 4 per EMA copy); free "
                      "some space or set output_dir"]
    return line, []


def with_download_hints(suite: Suite, problems: list[str]) -> list[str]:
    """Each problem of a dataset with a ``root`` that is not there, followed by the ``data get``
    command that fetches it (benchmark/data.py)."""
    from .data import download_hint
    out = []
    for problem in problems:
        component = next((c for c in suite.datasets if problem.startswith(f"datasets.{c.label}:")), None)
        root = getattr(component.options, "root", "") if component is not None else ""
        if root and not Path(root).expanduser().is_dir():
            problem += f". {download_hint(root, component.cls.registry_name)}"
        out.append(problem)
    return out


def check_weights(suite: Suite) -> list[str]:
    rows = weights.status(weights.required_weights(suite), suite.settings.weights_dir or None)
    return [f"{r.filename} [{r.state}]: {r.message}" for r in rows if not r.ok]


def build_runs(suite: Suite) -> dict:
    """Construct each run's method, dataset and task (no ``setup``: no network is built, no data is
    read), so that a run the options cannot make fails here, not hours into a suite: run_id -> task."""
    from .runner import Runner

    runner = Runner(suite)
    tasks = {}
    for run in suite.runs:
        tasks[run.run_id] = run.task.cls(run.task_options, runner.dataset(run.dataset), runner.build_method(run),
                                         runner.context(run.directory, run.seed))
    return tasks


def check_plugin_hooks(suite: Suite) -> None:
    """Every method and task class of the suite implements its contract (benchmark/hooks.py): a
    misspelt or missing hook fails here, before anything is built or trained."""
    from .hooks import check_hooks
    check_hooks([c.cls for c in suite.methods + suite.tasks])


def plan_suite(suite: Suite, perf_dir: Path = PERF_DIR, check_data: bool = True,
               check_weight_files: bool = True, stream=None) -> SuitePlan:
    check_plugin_hooks(suite)
    tasks = build_runs(suite)
    table = measured_step_times(perf_dir)
    identities, data_problems = check_datasets(suite, stream) if check_data else ({}, [])
    # results made from other data or files than those there now are stale, as run says
    states = [run.folder.state(inputs_of_run(run, identities.get(run.dataset.label))) for run in suite.runs]
    runs = [RunPlan(run.run_id, run.planned_steps(), estimate_step(run, table), state)
            for run, state in zip(suite.runs, states)]
    plan = SuitePlan(suite, runs)
    plan.folder_problems = [refusal for run, state in zip(suite.runs, states) if (refusal := run.folder.refusal(state))]
    plan.output_checked, plan.output_problems = check_output(suite, runs, tasks)
    if check_data:
        plan.datasets_checked, plan.data_problems = identities, with_download_hints(suite, data_problems)
    if check_weight_files:
        plan.weight_problems = check_weights(suite)
    plan.warnings = meaningless_settings(suite)
    return plan


def format_plan(plan: SuitePlan) -> str:
    from .progress import format_seconds

    suite = plan.suite
    s = suite.settings
    lines = [f"suite '{suite.name}' ({suite.source}): {len(plan.runs)} run(s) = {len(suite.tasks)} task(s) x "
             f"{len(suite.datasets)} dataset(s) x {len(suite.methods)} method(s) x {len(s.seeds)} seed(s)",
             ""]
    width = max(len(r.run_id) for r in plan.runs)
    lines.append(f"  {'run'.ljust(width)}  {'steps':>9}  {'s/step':>7}  {'hours':>7}  note")
    for r in plan.runs:
        per = "?" if r.estimate.seconds is None else f"{r.estimate.seconds:.4f}"
        hours = "?" if r.seconds is None else f"{r.seconds / 3600:.1f}"
        done = "" if r.state.kind == UNFINISHED else f" ({r.state.kind})"
        lines.append(f"  {r.run_id.ljust(width)}  {r.steps:>9,}  {per:>7}  {hours:>7}  {r.estimate.note}{done}")
    lines.append("")
    lines.append(f"runs: {len(plan.runs)}; training steps: {plan.total_steps:,}"
                 + (f" ({plan.remaining_steps:,} still to do)" if plan.remaining_steps != plan.total_steps else ""))
    known = [r for r in plan.runs if r.estimate.seconds is not None]
    if known:
        lines.append(f"estimated GPU time: {plan.estimated_hours:,.1f} h ({format_seconds(plan.estimated_hours * 3600)}) "
                     f"of training for the {len(known)} run(s) with a measured step time, from step times measured "
                     f"on {', '.join(plan.devices)} (docs/perf); evaluation is not included")
    else:
        lines.append("estimated GPU time: unknown (no run of this suite has a measured step time in docs/perf)")
    if plan.unknown_runs:
        lines.append(f"unknown: {len(plan.unknown_runs)} run(s) without a measured step time, left out of the "
                     f"estimate ({plan.unknown_runs[0].estimate.note})")
    if plan.datasets_checked:
        lines.append("data: " + "; ".join(f"{label} ok" for label in plan.datasets_checked))
    if plan.output_checked:
        lines.append(plan.output_checked)
    if plan.warnings:
        lines.append("")
        lines.append(f"{len(plan.warnings)} warning(s): settings that make results meaningless:")
        lines += [f"  - {w}" for w in plan.warnings]
    if plan.problems:
        lines.append("")
        lines.append(f"{len(plan.problems)} problem(s) before this suite can run:")
        lines += [f"  - {p}" for p in plan.problems]
    return "\n".join(lines)
