"""Published numbers (``benchmark/published/*.csv``, shipped as package data) and how this
benchmark's runs map onto them.

This is the one place that names methods and datasets of a paper: tasks know no method by name, and
the report asks here which published row, if any, stands beside one of its rows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent / "published"
"""The papers' published tables; installed with the package (pyproject.toml ``package-data``)."""


@dataclass(frozen=True)
class PaperTable:
    """A published table: its CSV (columns dataset, method, then the metrics) and the mapping of
    this benchmark's methods to the paper's row names."""
    csv: str
    title: str
    metrics: tuple[str, ...]
    method_rows: dict[tuple[str, str], str] = field(default_factory=dict)
    """(method type, preset) -> the paper's method name; preset '*' = any preset or label."""
    note: str = ""
    combine: Callable[[list[pd.DataFrame]], pd.DataFrame] | None = None
    """For a table drawn from several CSVs (``csv`` names them, joined by '+'): their frames, in that
    order, into the long form (dataset, method, metrics...)."""
    method_row: Callable[[str, str, Any], str | None] | None = None
    """For an ablation table: (method type, preset, the method's options) -> the paper's row, where
    rows differ in a method's options rather than in the method (``method_rows`` is then unused)."""
    protocol: dict[str, str] = field(default_factory=dict)
    """What the paper did, by protocol item (``test images``, ``FID resize``, ``reference images``,
    ``checkpoint``): the report flags where a suite differs."""
    test_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Paper dataset -> (images translated, reference images) the paper scored, where known: a suite
    that scores other numbers (a smaller test split, ``max_images``) is flagged."""
    resolution: int | None = None
    """The side of the outputs the paper scored, where known (a suite at another size is flagged)."""

    @property
    def paths(self) -> list[Path]:
        return [REFERENCE_DIR / name for name in self.csv.split("+")]

    @property
    def path(self) -> Path:
        return self.paths[0]

    def load(self) -> pd.DataFrame:
        """The published rows (empty, with the right columns, when a CSV is absent)."""
        if not all(p.is_file() for p in self.paths):
            return pd.DataFrame(columns=["dataset", "method", *self.metrics])
        return _long_form(tuple(self.paths), self.combine).copy()

    def datasets(self) -> list[str]:
        return sorted(self.load()["dataset"].unique())

    def paper_method(self, method_type: str, preset: str, options: Any = None) -> str | None:
        """The paper's row for a run of ``method_type`` with ``preset`` ('' = no preset) and
        ``options`` (the method's, used by ablation tables), or None."""
        if self.method_row is not None:
            return self.method_row(method_type, preset, options) if options is not None else None
        return self.method_rows.get((method_type, preset)) or self.method_rows.get((method_type, "*"))

    def value(self, dataset: str, paper_method: str, metric: str) -> float | None:
        rows = self.load()
        hit = rows[(rows.dataset == dataset) & (rows.method == paper_method)]
        if hit.empty or metric not in hit.columns or pd.isna(hit[metric].iloc[0]):
            return None
        return float(hit[metric].iloc[0])


@lru_cache(maxsize=None)
def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@lru_cache(maxsize=None)
def _long_form(paths: tuple[Path, ...], combine) -> pd.DataFrame:
    """The published rows of CSVs ``paths``, combined once (``value`` asks for them per cell)."""
    frames = [_read_csv(p).copy() for p in paths]
    return combine(frames) if combine else frames[0]


HNEGSRC_TABLE2 = PaperTable(
    csv="hnegsrc_cvpr22_table2_multi_modal.csv",
    title="Hneg-SRC, CVPR 2022, Table 2",
    metrics=("latent_FID", "latent_LPIPS", "reference_FID", "reference_LPIPS"),
    method_rows={("none", "*"): "StarGANv2",
                 ("hnegsrc", "*"): "StarGANv2+HnegSRC",
                 ("flsesim", "lsesim"): "StarGANv2+LSeSim"},
    note="StarGAN v2 at 256 px, 100k iterations, FID with torchvision's Inception, LPIPS with the "
         "ImageNet AlexNet",
)

def _graphcl_table1_with_hnegsrc_fcn_scores(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """GraphCL's Table 1 (FID, KIDx100 on five datasets) joined with Hneg-SRC's Table 1 (horse2zebra
    FID; Cityscapes FID and FCN scores, its "mAP" being the mIoU). Both papers print the same FIDs
    for the rows they share; Hneg-SRC's fill the rows GraphCL's table lacks."""
    graphcl, hnegsrc = frames
    h2z = pd.DataFrame({"dataset": "horse2zebra", "method": hnegsrc["method"], "FID": hnegsrc["h2z_FID"]})
    city = pd.DataFrame({"dataset": "cityscapes", "method": hnegsrc["method"], "FID": hnegsrc["city_FID"],
                         "mIoU": hnegsrc["city_mAP"], "pixAcc": hnegsrc["city_pixAcc"],
                         "clsAcc": hnegsrc["city_clsAcc"]})
    merged = graphcl.merge(pd.concat([h2z, city]), on=["dataset", "method"], how="outer",
                           suffixes=("", "_hnegsrc"))
    merged["FID"] = merged["FID"].fillna(merged.pop("FID_hnegsrc"))
    return merged


SINGLE_MODAL_TABLE1 = PaperTable(
    csv="graphcl_aaai24_table1.csv+hnegsrc_cvpr22_table1_single_modal.csv",
    title="GraphCL, AAAI 2024, Table 1 (FID, KIDx100) and Hneg-SRC, CVPR 2022, Table 1 (Cityscapes "
          "mIoU / pixAcc / clsAcc)",
    metrics=("FID", "KIDx100", "mIoU", "pixAcc", "clsAcc"),
    method_rows={("cyclegan", "*"): "CycleGAN",
                 ("cut", "cut"): "CUT",
                 ("negcut", "negcut"): "NEGCUT",
                 ("flsesim", "lsesim"): "LSeSim",
                 ("hnegsrc", "*"): "HnegSRC",
                 ("graphcl", "*"): "GraphCL"},
    note="The papers trained at 256x256 crops with ResNet-9 generators for 400 epochs and scored the "
         "test sets with pytorch-fid; Cityscapes label->photo FCN scores with DRN-D-22",
    combine=_graphcl_table1_with_hnegsrc_fcn_scores,
)

HNEGSRC_TABLE3 = PaperTable(
    csv="hnegsrc_cvpr22_table3_compression.csv",
    title="Hneg-SRC, CVPR 2022, Table 3",
    metrics=("params_M", "MACs_G", "FID", "mIoU"),
    method_rows={("none", "*"): "student_baseline", ("hnegsrc", "*"): "student_HnegSRC"},
    note="Fast GAN Compression at 256x256 (horse2zebra: CycleGAN teacher, 3e9 MACs budget; maps and "
         "Cityscapes: pix2pix teachers), gan-compression's FID and DRN-D-105 mIoU",
    combine=lambda frames: frames[0].rename(columns={"model": "method"}),
)
"""The compression table; its teacher rows are the method ``teacher`` (the report's teacher row)."""

CUT_PROTOCOL = {
    "test images": "every test image (horse2zebra: 120 horses translated, 140 zebras as reference; "
                   "Cityscapes: 500)",
    "FID resize": "legacy (pytorch-fid on the 256x256 outputs)",
    "reference images": "the target side's test images (test B)",
    "checkpoint": "chosen on the test set (Hneg-SRC's README scores `--epoch best`; GraphCL's "
                  "`--epoch [epoch-for-test]`, unstated)",
}
"""The evaluation of the single-modal papers (GraphCL, Hneg-SRC: CUT's test.py, then pytorch_fid)."""
CUT_TEST_COUNTS = {"horse2zebra": (120, 140), "cityscapes": (500, 500)}
"""The test splits behind CUT_PROTOCOL's 'every test image'."""
SINGLE_MODAL_TABLE1 = dataclasses.replace(SINGLE_MODAL_TABLE1, protocol=CUT_PROTOCOL, test_counts=CUT_TEST_COUNTS,
                                          resolution=256)


def _graphcl_row(hops, threshold, pool_layers, downsample) -> str:
    return f"hops {int(hops)}, threshold {float(threshold):.1f}, pool layers {int(pool_layers)}, downsample {downsample}"


def _graphcl_table2_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    t = frames[0]
    return pd.DataFrame({"dataset": "horse2zebra",
                         "method": [_graphcl_row(*r) for r in zip(t.hops, t.threshold, t.pool_layers, t.downsample)],
                         "FID": t.FID_h2z, "KIDx100": t.KIDx100_h2z})


GRAPHCL_ABLATION_OPTIONS = ("num_hop", "nonzero_th", "pooling_num", "down_scale", "pooling_ratio")
"""The GraphCL options its Table 2 varies (``pooling_ratio`` goes with ``pooling_num``)."""


def _graphcl_table2_row(method_type: str, preset: str, options: Any) -> str | None:
    """The Table 2 row of a GraphCL run: its hops, threshold and pooling; None for another method or
    when an option the table does not vary differs from the README command's."""
    if method_type != "graphcl":
        return None
    from methods.graphcl import README_SETTINGS
    for key, value in README_SETTINGS.items():
        if key not in GRAPHCL_ABLATION_OPTIONS and getattr(options, key) != value:
            return None
    downsample = "-" if options.pooling_num == 0 else f"1/{options.down_scale}"
    return _graphcl_row(options.num_hop, options.nonzero_th, options.pooling_num, downsample)


GRAPHCL_TABLE2 = PaperTable(
    csv="graphcl_aaai24_table2_ablation.csv",
    title="GraphCL, AAAI 2024, Table 2 (ablation on horse2zebra)",
    metrics=("FID", "KIDx100"),
    method_row=_graphcl_table2_row,
    note="GraphCL's README command with one switch changed per row, horse2zebra at 256x256 crops for "
         "400 epochs, pytorch-fid",
    combine=_graphcl_table2_rows,
    protocol=CUT_PROTOCOL,
    test_counts=CUT_TEST_COUNTS,
    resolution=256,
)


def _hnegsrc_row(contrastive: str, src: str, hard: str) -> str:
    return f"{contrastive}, SRC {src}, hard negatives {hard}"


def _hnegsrc_table4_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    t = frames[0]
    names = [_hnegsrc_row(*r) for r in zip(t.contrastive, t.SRC, t.hard_negatives)]
    h2z = pd.DataFrame({"dataset": "horse2zebra", "method": names, "FID": t.h2z_FID})
    city = pd.DataFrame({"dataset": "cityscapes", "method": names, "FID": t.city_FID, "mIoU": t.city_mAP,
                         "pixAcc": t.city_pixAcc, "clsAcc": t.city_clsAcc})
    return pd.concat([h2z, city], ignore_index=True)


def _hnegsrc_table4_row(method_type: str, preset: str, options: Any) -> str | None:
    """The Table 4 row of a run: CUT (its own preset) is InfoNCE alone; a Hneg-SRC run's row is its
    contrastive loss, whether SRC is on (lambda_SRC > 0) and whether negatives are weighted."""
    if method_type == "cut" and preset == "cut":
        return _hnegsrc_row("InfoNCE", "no", "no")
    if method_type != "hnegsrc" or options.lambda_HDCE <= 0:
        return None
    yes = {True: "yes", False: "no"}
    return _hnegsrc_row("InfoNCE" if options.contrastive == "infonce" else "DCE",
                        yes[options.lambda_SRC > 0], yes[not options.no_Hneg])


HNEGSRC_TABLE4 = PaperTable(
    csv="hnegsrc_cvpr22_table4_ablation.csv",
    title="Hneg-SRC, CVPR 2022, Table 4 (ablation)",
    metrics=("FID", "mIoU", "pixAcc", "clsAcc"),
    method_row=_hnegsrc_table4_row,
    note="Hneg-SRC's components switched on one by one (the paper does not give the weights of the "
         "ablation rows), 256x256 crops, 400 epochs, pytorch-fid; Cityscapes FCN scores with DRN-D-22",
    combine=_hnegsrc_table4_rows,
    protocol=CUT_PROTOCOL,
    test_counts=CUT_TEST_COUNTS,
    resolution=256,
)

HNEGSRC_TABLE2 = dataclasses.replace(HNEGSRC_TABLE2, protocol={
    "test images": "every val image of each source domain (10 latent-guided outputs per target domain)",
    "FID resize": "StarGAN v2's metrics/fid.py (torchvision Inception, 299x299 bilinear)",
    "reference images": "FID against the train images of each target domain; style references from its val images",
    "checkpoint": "unstated (the fork's eval script loads `--resume_iter`)",
})

PAPER_TABLES: dict[str, PaperTable] = {"multi_modal": HNEGSRC_TABLE2, "single_modal": SINGLE_MODAL_TABLE1,
                                       "compression": HNEGSRC_TABLE3}
"""Task type -> the published table its report sets beside its rows."""

NAMED_TABLES: dict[str, PaperTable] = {
    "graphcl_table1": SINGLE_MODAL_TABLE1, "hnegsrc_table1": SINGLE_MODAL_TABLE1,
    "graphcl_table2": GRAPHCL_TABLE2, "hnegsrc_table2": HNEGSRC_TABLE2,
    "hnegsrc_table3": HNEGSRC_TABLE3, "hnegsrc_table4": HNEGSRC_TABLE4,
}
"""A suite's ``paper_table:`` -> the table its report compares with (default: the task's, above)."""


def table_for(task_type: str, named: str = "") -> PaperTable | None:
    """The published table a task's report sets beside its rows: the suite's ``paper_table:`` when
    given, else the task's own."""
    return NAMED_TABLES[named] if named else PAPER_TABLES.get(task_type)


def paper_dataset(label: str, dataset_type: str, explicit: str | None, table: PaperTable) -> str | None:
    """The paper's dataset a suite dataset stands for: its ``paper_dataset:`` key when given ('' or
    null: none), else its label when that names a published dataset (any case) and the data are not
    generated (type ``synthetic_*``)."""
    known = table.datasets()
    if explicit is not None:
        return explicit if explicit in known else None
    if dataset_type.startswith("synthetic") or label.lower() not in known:
        return None
    return label.lower()


def all_paper_datasets() -> set[str]:
    return {d for table in (*PAPER_TABLES.values(), *NAMED_TABLES.values()) for d in table.datasets()}
