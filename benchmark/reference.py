"""Published numbers (``benchmark/published/*.csv``, shipped as package data) and how this
benchmark's runs map onto them.

This is the one place that names methods and datasets of a paper: tasks know no method by name, and
the report asks here which published row, if any, stands beside one of its rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

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

    def paper_method(self, method_type: str, preset: str) -> str | None:
        """The paper's row for a run of ``method_type`` with ``preset`` ('' = no preset), or None."""
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

PAPER_TABLES: dict[str, PaperTable] = {"multi_modal": HNEGSRC_TABLE2, "single_modal": SINGLE_MODAL_TABLE1,
                                       "compression": HNEGSRC_TABLE3}
"""Task type -> the published table its report sets beside its rows."""


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
    return {d for table in PAPER_TABLES.values() for d in table.datasets()}
