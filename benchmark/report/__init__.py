"""Reports of a suite: markdown tables with FID/KID (and the other metrics), the published numbers
beside them, image grids, and a CSV of every run.

Modules: ``document`` writes the report (``write_report``); ``layouts`` is the registry of layouts
(``register_layout``: how a task is tabulated, keyed by its registered name); ``per_dataset`` (the
default: a table per dataset) and ``multi_modal`` (Hneg-SRC's Table 2) are the built-in layouts;
``results`` finds every row the config asks for, finished or missing with its reason; ``format``,
``paper`` and ``grids`` hold what layouts share (cells, tables, footers; published numbers; images);
``curves`` plots the training curves (losses, FID during training) after each task's section.
"""
from .document import write_report
from .layouts import LAYOUTS, ReportContext, layout_for, register_layout
from .paper import dataset_paper_name
from .results import Row, expected_rows

__all__ = ["write_report", "register_layout", "layout_for", "LAYOUTS", "ReportContext", "Row",
           "expected_rows", "dataset_paper_name"]
