"""``python -m benchmark data get NAME [--root DIR]``: download a public dataset of the paper configs
and unpack it into the layout its reader expects; ``data list`` shows where each one comes from.

Each :class:`Source` records the official URL and the script it was read from. No sha256 of these
archives is published by their authors, and none was recorded here (the archives could not be fetched
when this table was written): a download then prints the sha256 it computed and says that it was
**not verified**. A known sha256 (``Source.sha256``) is checked: a mismatch is refused and the file
kept aside as ``<archive>.rejected`` for inspection.

A download goes to ``<root>/.downloads/<archive>.part`` and is resumed with an HTTP Range request
when that file is there (an interrupted download continues where it stopped; a server that ignores
the range sends the whole file, which then replaces the part). Datasets behind a registration
(Cityscapes, the Weather set) print the steps instead.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from .core.errors import DataError

CHUNK = 1 << 16
CYCLEGAN_SCRIPT = ("junyanz/pytorch-CycleGAN-and-pix2pix datasets/download_cyclegan_dataset.sh (the same archives: "
                   "taesungp/contrastive-unpaired-translation datasets/download_cut_dataset.sh, "
                   "mit-han-lab/gan-compression datasets/download_cyclegan_dataset.sh; older host "
                   "people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/)")


@dataclass(frozen=True)
class Source:
    name: str
    """The name ``data get`` takes."""
    reader: str
    """The dataset type (``type:`` in a config) that reads the unpacked folder."""
    layout: tuple[str, ...]
    """Sub-folders the unpacked dataset folder must have (checked after unpacking)."""
    configs: str
    """The paper configs that use it."""
    url: str = ""
    """'' = no public download: ``manual`` says how to get it."""
    origin: str = ""
    """Where the URL was read (repository and file)."""
    sha256: str = ""
    """'' = not published: the download is not verified (and says so)."""
    top: str = ""
    """The folder the archive unpacks to (it becomes ``<root>/<folder>``)."""
    folder: str = ""
    """The dataset folder under ``--root`` ('' = the name)."""
    manual: str = ""
    """Steps to get a dataset that has no public download."""
    convert: Callable[[Path], str] | None = None
    """Rearranges an unpacked folder into ``layout``; returns what it did, for the user."""

    @property
    def target(self) -> str:
        return self.folder or self.name

    @property
    def archive(self) -> str:
        return self.url.split("?")[0].rsplit("/", 1)[-1]


def _domains_from_numbered_folders(folder: Path) -> str:
    """ComboGAN's layout (``train0/``, ``test0/``, ``train1/``, ...) -> ``train/<i>/``, ``val/<i>/``."""
    moved = []
    for split, new in (("train", "train"), ("test", "val")):
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(split)
                          and p.name[len(split):].isdigit()):
            (folder / new).mkdir(exist_ok=True)
            sub.rename(folder / new / sub.name[len(split):])
            moved.append(f"{sub.name} -> {new}/{sub.name[len(split):]}")
    if not moved:
        return ""
    return ("moved " + ", ".join(moved) + "; the domains are named by the archive's folder numbers: check "
            "which season each holds before reading per-domain numbers")


def _val_from_test(folder: Path) -> str:
    """pix2pix archives without ``val/`` (GAN Compression links ``test`` as ``val``)."""
    if (folder / "val").exists() or not (folder / "test").is_dir():
        return ""
    (folder / "val").symlink_to("test", target_is_directory=True)
    return "linked val -> test (as GAN Compression's download script does)"


def _cyclegan(name: str, configs: str) -> Source:
    return Source(name, "unaligned_folder", ("trainA", "trainB", "testA", "testB"), configs,
                  url=f"https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip", origin=CYCLEGAN_SCRIPT,
                  top=name)


CITYSCAPES_STEPS = """\
Cityscapes needs an account; its licence does not allow redistribution, so no script downloads it.
  1. Register at https://www.cityscapes-dataset.com/register/ and log in.
  2. Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from
     https://www.cityscapes-dataset.com/downloads/ and unzip both into one folder, say ~/cityscapes_raw.
  3. Get datasets/prepare_cityscapes_dataset.py of taesungp/contrastive-unpaired-translation and run
       python prepare_cityscapes_dataset.py --gtFine_dir ~/cityscapes_raw/gtFine \\
           --leftImg8bit_dir ~/cityscapes_raw/leftImg8bit --output_dir {root}/cityscapes
     It writes photos to trainA/testA, colour label maps to trainB/testB (the unaligned_folder layout of
     configs/paper_cityscapes.yaml, with direction: BtoA) and the side-by-side pairs to train/ and test/.
  4. For the compression task's aligned_folder (configs/paper_compression.yaml), which reads val/:
       ln -s test {root}/cityscapes/val
  5. Check: python -m benchmark plan configs/paper_cityscapes.yaml datasets.cityscapes.root={root}/cityscapes"""

WEATHER_STEPS = """\
The Weather set of Hneg-SRC's Table 2 is a five-class weather image collection on IEEE DataPort, which
needs an account; the fork's train / val split is not public (its README: ask the authors).
  1. Log in at https://ieee-dataport.org and download the five-class weather image dataset.
  2. Arrange it as {root}/weather/train/<class>/ and {root}/weather/val/<class>/ (one folder per class,
     the same classes in both; the split is yours: say which in the report's description).
  3. Check: python -m benchmark plan configs/paper_weather.yaml datasets.weather.root={root}/weather"""

SOURCES = {s.name: s for s in [
    _cyclegan("horse2zebra", "paper_horse2zebra, paper_compression, paper_graphcl_ablation, "
                             "paper_hnegsrc_ablation_horse2zebra"),
    _cyclegan("apple2orange", "paper_apple2orange"),
    _cyclegan("summer2winter_yosemite", "paper_summer2winter"),
    _cyclegan("maps", "paper_maps"),
    Source("maps_pix2pix", "aligned_folder", ("train", "val"), "paper_compression (its `maps` entry)",
           url="http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz",
           origin="mit-han-lab/gan-compression datasets/download_pix2pix_dataset.sh", top="maps",
           convert=_val_from_test),
    Source("afhq", "multidomain_folder", ("train", "val"), "none (StarGAN v2's AFHQ, for multi_modal suites)",
           url="https://www.dropbox.com/s/t9l9o3vsx2jai3z/afhq.zip?dl=1",
           origin="clovaai/stargan-v2 download.sh (afhq-dataset; its ?dl=0 link, with Dropbox's ?dl=1 "
                  "for the file itself instead of the preview page)", top="afhq"),
    Source("seasons", "multidomain_folder", ("train", "val"), "paper_seasons",
           url="https://data.vision.ee.ethz.ch/cvl/combogan/alps_seasons.zip",
           origin="a ComboGAN download script (datasets/download_dataset.sh, 'alps_seasons'), as found by code "
                  "search; not confirmed in AAnoosheh/ComboGAN itself", top="alps_seasons",
           convert=_domains_from_numbered_folders),
    Source("cityscapes", "unaligned_folder or aligned_folder", ("trainA", "trainB", "testA", "testB"),
           "paper_cityscapes, paper_hnegsrc_ablation_cityscapes, paper_compression", manual=CITYSCAPES_STEPS),
    Source("weather", "multidomain_folder", ("train", "val"), "paper_weather", manual=WEATHER_STEPS),
]}
"""Every dataset of the paper configs, by the name ``data get`` takes (configs/paper_single_image.yaml
takes two image files of your own)."""


def source(name: str) -> Source:
    from .core import registry
    if name not in SOURCES:
        raise DataError(f"no download named '{name}'{registry.suggest(name, sorted(SOURCES))}; "
                        "`python -m benchmark data list` shows them")
    return SOURCES[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Progress:
    """One line on ``stream``, rewritten at most every 0.2 s: bytes so far, total, percent, rate."""

    def __init__(self, label: str, total: int | None, done: int, stream: TextIO):
        self.label, self.total, self.done, self.stream = label, total, done, stream
        self.start, self.start_bytes, self.shown = time.monotonic(), done, 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.shown >= 0.2:
            self.shown = now
            self._show(now)

    def _show(self, now: float) -> None:
        rate = (self.done - self.start_bytes) / max(now - self.start, 1e-6) / 1e6
        if self.total:
            width = 30
            filled = int(width * self.done / self.total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {100 * self.done / self.total:5.1f}% "
            size = f"{self.done / 1e6:.1f} / {self.total / 1e6:.1f} MB"
        else:
            bar, size = "", f"{self.done / 1e6:.1f} MB"
        self.stream.write(f"\r{self.label}: {bar}{size} {rate:.1f} MB/s")
        self.stream.flush()

    def close(self) -> None:
        self._show(time.monotonic())
        self.stream.write("\n")


def download(url: str, part: Path, stream: TextIO | None = None, timeout: float = 60) -> Path:
    """Fetch ``url`` into ``part``, continuing a partial file with a Range request; returns ``part``."""
    stream = stream or sys.stderr
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "i2i-bench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part already holds the whole file
            return part
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"download of {url} failed: {exc}") from exc
    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = have and response.status == 206 and content_range.startswith(f"bytes {have}-")
        if have and not resumed:
            stream.write(f"the server ignored the range request: downloading {url} from the start\n")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        progress = Progress(part.name.removesuffix(".part"), total, have, stream)
        if resumed:
            stream.write(f"resuming at {have / 1e6:.1f} MB\n")
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    progress.update(len(block))
        except (OSError, urllib.error.URLError) as exc:  # a dropped connection: the part stays for a resume
            progress.close()
            raise DataError(f"download of {url} stopped at {part.stat().st_size / 1e6:.1f} MB ({exc}); run the "
                            "same command again to resume it") from exc
        progress.close()
    if total is not None and part.stat().st_size != total:
        raise DataError(f"download of {url} stopped at {part.stat().st_size:,} of {total:,} bytes; run the same "
                        "command again to resume it")
    return part


def check_sha256(path: Path, expected: str, stream: TextIO) -> str:
    """The file's sha256; a DataError (the file moved to ``*.rejected``) when ``expected`` is given and
    differs. Without ``expected`` it says, on ``stream``, that nothing was verified."""
    actual = sha256_of(path)
    if expected and actual != expected:
        rejected = path.with_name(path.name.removesuffix(".part") + ".rejected")
        path.replace(rejected)
        raise DataError(f"sha256 mismatch for {rejected.name}: expected {expected}, got {actual}. The file is "
                        f"kept at {rejected} and was not unpacked; delete it and run again, or report the change")
    if expected:
        stream.write(f"sha256 {actual}: verified\n")
    else:
        stream.write(f"sha256 {actual}: NOT verified (no published checksum for this archive); compare it with "
                     "a colleague's download or record it in benchmark/data.py\n")
    return actual


def _safe_members(names: list[str], into: Path) -> None:
    """Refuse archive members that would land outside ``into`` (absolute paths, '..')."""
    base = into.resolve()
    for name in names:
        if not (into / name).resolve().is_relative_to(base):
            raise DataError(f"archive member '{name}' would be written outside {into}; refused")


def unpack(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            _safe_members(z.namelist(), into)
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            _safe_members(t.getnames(), into)
            t.extractall(into, filter="data")
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive")


def missing_layout(folder: Path, layout: tuple[str, ...]) -> list[str]:
    return [sub for sub in layout if not (folder / sub).is_dir()]


def get(src: Source, root: Path, stream: TextIO | None = None) -> Path:
    """Download, check and unpack ``src`` into ``root / src.target``; returns that folder. An existing
    folder with the expected layout is left as it is. Messages and the progress bar go to ``stream``
    (default: standard error)."""
    stream = stream or sys.stderr
    root = Path(root).expanduser().resolve()
    folder = root / src.target
    if not src.url:
        raise DataError(f"'{src.name}' has no public download.\n" + src.manual.format(root=root))
    if folder.is_dir() and not missing_layout(folder, src.layout):
        stream.write(f"{folder} is already there ({', '.join(src.layout)}): nothing to do\n")
        return folder
    if folder.exists():
        raise DataError(f"{folder} exists but lacks {', '.join(missing_layout(folder, src.layout))}: move it away "
                        "(or finish it by hand) and run again")
    downloads = root / ".downloads"
    part = downloads / f"{src.archive}.part"
    stream.write(f"{src.name}: {src.url}\n  (URL from {src.origin})\n")
    download(src.url, part, stream)
    check_sha256(part, src.sha256, stream)
    staging = downloads / f"{src.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    unpack(part, staging)
    unpacked = staging / src.top if src.top and (staging / src.top).is_dir() else staging
    note = src.convert(unpacked) if src.convert else ""
    missing = missing_layout(unpacked, src.layout)
    if missing:
        raise DataError(f"the archive of '{src.name}' unpacked to {unpacked} without {', '.join(missing)}, which "
                        f"{src.reader} needs ({', '.join(src.layout)}); nothing was moved into {root}")
    unpacked.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)
    part.unlink()
    if note:
        stream.write(note + "\n")
    stream.write(f"{src.name} is in {folder} ({src.reader}: {', '.join(src.layout)})\n")
    return folder


def format_sources() -> str:
    lines = []
    for s in SOURCES.values():
        where = s.url or "no public download (`data get` prints the steps)"
        lines.append(f"{s.name:<24} {s.reader:<20} {where}\n{'':<24} used by: {s.configs}")
    return "\n".join(lines)


def download_hint(root: str, reader: str) -> str:
    """What to run for a missing dataset folder ``root`` read by dataset type ``reader``: the ``data get``
    command of the download whose folder has that name and layout, else ``data list``."""
    path = Path(root).expanduser()
    match = next((s for s in SOURCES.values() if reader in s.reader.split(" or ") and path.name in (s.target, s.top)), None)
    if match is None:
        return "`python -m benchmark data list` shows the public datasets and where they come from"
    command = f"`python -m benchmark data get {match.name} --root {path.parent}`"
    if not match.url:
        return f"{command} prints how to get it"
    if match.target != path.name:
        return f"{command} fetches it into {path.parent / match.target} (then set root to that folder)"
    return f"{command} fetches it"
