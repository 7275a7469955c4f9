"""``python -m benchmark describe NAME``: what a registered method, preset, task or dataset, or a
reported metric, is; its options with type, default and meaning; its presets; the tasks that accept
it and why the others refuse it. :func:`configuration_reference` writes the same text for every
name as docs/configuration.md (tests/test_describe.py regenerates it and compares).

Acceptance is decided by the code that loads a config, not restated here: a task refuses a method
when it lacks one of the method's ``required_capabilities`` (:func:`benchmark.config.
missing_capabilities`), or when the method cannot follow the task's patch policy
(``Method.patch_settings``); a dataset, when its kind is not one of ``Task.dataset_kinds``.
"""
from __future__ import annotations

from . import plugins
from .config import find_method, missing_capabilities
from .core import registry
from .core.errors import ConfigError
from .core.settings import build
from .options_doc import OptionDoc, format_default, meaning, options_of
from datasets.base import DATASET_KINDS

METRICS = {
    "FID": ("Fréchet Inception distance between the outputs and the real target images (lower is better); "
            "TF-Inception pool features, `evaluation.fid_resize` says how images are resized.",
            "single_modal, compression"),
    "FID_inf": ("FID-infinity (Chong & Forsyth 2020): FID extrapolated to infinitely many images, reported "
                "when fewer outputs than `evaluation.fid_infinity_below` are scored.", "single_modal, compression"),
    "KIDx100": ("Kernel Inception distance x 100 (lower is better): the mean over "
                "`evaluation.kid_subsets` subsets of `evaluation.kid_subset_size` images.", "single_modal, compression"),
    "KIDx100_std": ("Standard deviation of KIDx100 over its subsets; 0 when each subset is the whole set "
                    "(fewer images than `kid_subset_size`), which the reports then leave out.",
                    "single_modal, compression"),
    "mIoU": ("Mean intersection over union of a segmenter's labels of the outputs against the source label "
             "maps (Cityscapes: DRN-D-22, the papers' 'mAP'; higher is better).", "single_modal, compression"),
    "pixAcc": ("Pixel accuracy of the segmenter's labels of the outputs (higher is better).",
               "single_modal, compression"),
    "clsAcc": ("Mean per-class accuracy of the segmenter's labels of the outputs (higher is better).",
               "single_modal, compression"),
    "maskIoU": ("Intersection over union of the object mask kept through the translation (synthetic "
                "objects; higher is better).", "single_modal, compression"),
    "params_M": ("Generator parameters in millions.", "compression"),
    "MACs_G": ("Generator multiply-accumulate operations per image, in billions (torchprofile, as GAN "
               "Compression counts them).", "compression"),
    "latent_FID": ("FID of latent-guided outputs (random style codes), averaged over the ordered domain "
                   "pairs (StarGAN v2's protocol).", "multi_modal"),
    "reference_FID": ("FID of reference-guided outputs (style codes of target-domain images), averaged over "
                      "the ordered domain pairs.", "multi_modal"),
    "latent_LPIPS": ("Diversity: mean LPIPS between the outputs of one source image (higher is more diverse).",
                     "multi_modal"),
    "reference_LPIPS": ("Diversity of reference-guided outputs (mean pairwise LPIPS).", "multi_modal"),
    "latent_L1_diversity": ("Diversity in pixel space: mean absolute difference between the outputs of one "
                            "source image, pixels in [0, 1]; needs no network.", "multi_modal"),
    "SIFID": ("Single-image FID of the output against the target image (lower is better).", "single_image"),
    "structure": ("Correlation of the blurred edge maps of output and source (higher keeps more layout).",
                  "single_image"),
    "LPIPS": ("Perceptual distance of the output to the source (lower is closer to the input).", "single_image"),
}
"""The metrics the reports tabulate, by the name metrics.json and the report give them."""


def _all_presets() -> dict[str, type]:
    return {preset: cls for cls in registry.METHODS.entries.values() for preset in cls.presets}


def known_names() -> list[str]:
    """Every name :func:`describe` accepts."""
    plugins.load_builtins()
    names = set(registry.METHODS.names()) | set(_all_presets()) | set(registry.TASKS.names())
    return sorted(names | set(registry.DATASETS.names()) | set(METRICS))


def _options_table(options: list[OptionDoc], overrides: dict | None = None, prefix: str = "") -> list[str]:
    overrides = overrides or {}
    rows = []
    for o in options:
        default = format_default(o.default)
        if o.name in overrides:
            default = f"{format_default(overrides[o.name])} (default {default})"
        cells = (f"`{prefix}{o.name}`", o.type, default, meaning(o) or "(undocumented)")
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        rows += _options_table(list(o.fields), None, f"{prefix}{o.name}.")[2:]
    return ["| option | type | default | meaning |", "|---|---|---|---|", *rows]


def method_refusal(method_cls: type, preset: str, task_cls: type) -> str | None:
    """Why ``task_cls`` refuses the method (with ``preset``'s params), or None when it accepts it:
    the config loader's own checks, with the task's default options and the method's paper settings
    for it (``task_defaults``)."""
    fields = task_cls.Options.__dataclass_fields__
    task_options = build(task_cls.Options, {k: v for k, v in method_cls.task_defaults.items() if k in fields},
                         "task options")
    missing = missing_capabilities(task_cls, task_options, method_cls)
    if missing:
        able = set(missing) <= set(task_cls.capabilities)
        return (f"the method needs {', '.join(missing)}, which the task cannot provide"
                + (" with its default options (see its options)" if able else ""))
    policy = getattr(task_cls, "patch_policy", None)
    if policy is None:
        return None
    params = build(method_cls.Params, dict(method_cls.presets.get(preset, {})), "params")
    answer = method_cls.patch_settings(policy, params)
    return f"its patch policy is {policy.describe()}: {answer}" if isinstance(answer, str) else None


def _dataset_refusal(dataset_cls: type, task_cls: type) -> str | None:
    if task_cls.accepts(dataset_cls):
        return None
    return (f"the task trains on {' or '.join(task_cls.dataset_kinds)} data, the dataset is "
            f"{getattr(dataset_cls, 'kind', None) or '(no kind declared)'}")


def _acceptance(refusal, builtin: bool) -> list[str]:
    lines = []
    for name in _names(registry.TASKS, builtin):
        reason = refusal(registry.TASKS.get(name))
        lines.append(f"- `{name}`: " + ("accepts" if reason is None else f"refuses: {reason}"))
    return lines


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def describe_method(name: str, builtin: bool = False) -> str:
    cls, preset = find_method(name)
    title = f"preset `{preset}` of method `{cls.registry_name}`" if preset and preset != cls.registry_name \
        else f"method `{cls.registry_name}`"
    lines = [f"### {title}", "", _doc(cls), "", f"Class: `{cls.__module__}.{cls.__qualname__}`.", ""]
    if cls.presets:
        lines.append("Presets (name in `methods:` -> the options it sets):")
        lines += [f"- `{p}`: {values or '(the defaults)'}" for p, values in cls.presets.items()]
        lines.append("")
    if getattr(cls, "task_defaults", None):
        lines += [f"Task options this method's paper uses, applied unless the config sets them: {cls.task_defaults}", ""]
    lines.append("Options (`params:` of a method entry)" + (f"; the defaults with preset `{preset}`:" if preset else ":"))
    lines += _options_table(options_of(cls.Params), cls.presets.get(preset, {}))
    lines += ["", "Tasks:", *_acceptance(lambda task: method_refusal(cls, preset, task), builtin)]
    return "\n".join(lines)


def describe_task(name: str, builtin: bool = False) -> str:
    cls = registry.TASKS.get(name)
    kinds = ", ".join(f"`{k}`" for k in cls.dataset_kinds)
    datasets = [d for d in _names(registry.DATASETS, builtin) if cls.accepts(registry.DATASETS.get(d))]
    lines = [f"### task `{name}`", "", _doc(cls), "", f"Class: `{cls.__module__}.{cls.__qualname__}`.", "",
             f"Trains on dataset kinds {kinds}: {', '.join(f'`{d}`' for d in datasets) or 'none registered'}.",
             f"Capabilities: {', '.join(sorted(cls.capabilities)) or 'none beyond asking a method for losses'}."]
    if getattr(cls, "patch_policy", None) is not None:
        lines.append(f"Patch policy (each method answers it in `patch_settings`, or is refused): "
                     f"{cls.patch_policy.describe()}.")
    lines += ["", "Options (`tasks.<label>:`):", *_options_table(options_of(cls.Options)), "", "Methods:"]
    for method in _names(registry.METHODS, builtin):
        mcls = registry.METHODS.get(method)
        reason = method_refusal(mcls, "", cls)
        lines.append(f"- `{method}`: " + ("accepted" if reason is None else f"refused: {reason}"))
    return "\n".join(lines)


def describe_dataset(name: str, builtin: bool = False) -> str:
    cls = registry.DATASETS.get(name)
    kind = getattr(cls, "kind", None) or "(none declared)"
    lines = [f"### dataset `{name}`", "", _doc(cls), "", f"Class: `{cls.__module__}.{cls.__qualname__}`.", "",
             f"Kind: `{kind}` ({DATASET_KINDS.get(kind, 'unknown kind')}).", "",
             "Options (`datasets.<label>:`):", *_options_table(options_of(cls.Options)), "",
             "Tasks:", *_acceptance(lambda task: _dataset_refusal(cls, task), builtin)]
    return "\n".join(lines)


def describe_metric(name: str) -> str:
    meaning_, tasks = METRICS[name]
    return "\n".join([f"### metric `{name}`", "", meaning_, "", f"Reported by: {tasks}."])


def describe(name: str) -> str:
    """Markdown describing ``name``: a method or preset, a task, a dataset or a metric (in that order
    of precedence when a name is several things, e.g. the preset ``cut`` of the method ``cut``)."""
    plugins.load_builtins()
    parts = []
    if name in registry.METHODS.entries or name in _all_presets():
        parts.append(describe_method(name))
    if name in registry.TASKS.entries:
        parts.append(describe_task(name))
    if name in registry.DATASETS.entries:
        parts.append(describe_dataset(name))
    if name in METRICS:
        parts.append(describe_metric(name))
    if not parts:
        raise ConfigError(f"'{name}' is no registered method, preset, task or dataset, nor a reported metric"
                          f"{registry.suggest(name, known_names())}")
    return "\n\n".join(parts)


def configuration_reference() -> str:
    """docs/configuration.md: every built-in method, task and dataset and every metric, described."""
    plugins.load_builtins()
    out = ["# Configuration reference", "",
           "Generated by `python -m benchmark describe --reference > docs/configuration.md` from the options "
           "classes (their field docstrings) and the registries; tests/test_describe.py fails when it is stale. "
           "`python -m benchmark describe NAME` prints one entry. The suite-level keys (`seeds`, "
           "`evaluation`, `validation`, `launcher`, ...) are the last section.", ""]
    out += ["## Methods", ""] + [describe_method(n, True) + "\n" for n in _names(registry.METHODS, True)]
    out += ["## Tasks", ""] + [describe_task(n, True) + "\n" for n in _names(registry.TASKS, True)]
    out += ["## Datasets", ""] + [describe_dataset(n, True) + "\n" for n in _names(registry.DATASETS, True)]
    out += ["## Metrics", ""] + [f"- `{n}` ({tasks}): {m}" for n, (m, tasks) in METRICS.items()] + [""]
    out += ["## Suite settings", ""] + _suite_settings()
    return "\n".join(out).rstrip() + "\n"


def _names(reg: registry.Registry, builtin: bool) -> list[str]:
    """The registered names; with ``builtin`` only those of the built-in packages (the reference page
    must not depend on the plugins a process happened to load)."""
    return [n for n in reg.names()
            if not builtin or reg.get(n).__module__.split(".")[0] in plugins.BUILTIN_PACKAGES]


def _suite_settings() -> list[str]:
    from .config import LauncherSettings, SuiteSettings
    from .core.context import EvaluationConfig, ValidationConfig
    lines = ["Top-level keys of a suite YAML:", *_options_table(options_of(SuiteSettings)), ""]
    for key, cls in (("evaluation", EvaluationConfig), ("validation", ValidationConfig), ("launcher", LauncherSettings)):
        lines += [f"`{key}:`", *_options_table(options_of(cls)), ""]
    return lines
