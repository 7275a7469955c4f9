"""Published numbers (``results/reference/*.csv``) and how this benchmark's runs map onto them.

This is the one place that names methods and datasets of a paper: tasks know no method by name, and
the report asks here which published row, if any, stands beside one of its rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"


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

    @property
    def path(self) -> Path:
        return REFERENCE_DIR / self.csv

    def load(self) -> pd.DataFrame:
        """The published rows (empty, with the right columns, when the CSV is absent)."""
        if not self.path.is_file():
            return pd.DataFrame(columns=["dataset", "method", *self.metrics])
        return _read_csv(self.path).copy()

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

PAPER_TABLES: dict[str, PaperTable] = {"multi_modal": HNEGSRC_TABLE2}
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
