"""Published numbers beside a report's rows: which paper row and dataset a suite's method and dataset
stand for, published cells as the papers print them, and the note that says where they come from."""
from __future__ import annotations

from ..config import Component
from ..reference import PaperTable, paper_dataset
from .format import NOT_SCORED


def paper_methods(methods: list[Component], table: PaperTable | None) -> dict[str, str | None]:
    """Method label -> the paper's method name (None: not in the paper, or no table; identity, not a
    method of the suite, never is)."""
    if table is None:
        return {m.label: None for m in methods}
    return {m.label: table.paper_method(m.cls.registry_name, m.preset) for m in methods}


def dataset_paper_name(dataset: Component, table: PaperTable | None) -> str | None:
    """The published dataset a suite dataset stands for under ``table`` (None: none, or no table)."""
    if table is None:
        return None
    return paper_dataset(dataset.label, dataset.cls.registry_name, dataset.paper_dataset, table)


def published_cell(value: float | None, digits: int) -> str:
    """A published number with ``digits`` decimals, or NOT_SCORED when the paper has none."""
    return NOT_SCORED if value is None else f"{value:.{digits}f}"


def mapping_words(table: PaperTable) -> str:
    parts = [f"`{kind}`{'' if preset == '*' else f' (preset `{preset}`)'} -> {name}"
             for (kind, preset), name in table.method_rows.items()]
    return ", ".join(parts)


def paper_note(table: PaperTable | None, paper: dict[str, str | None]) -> str:
    """The footer on paper columns. ``paper``: dataset label -> the paper's dataset name or None."""
    if table is None:
        return ""
    names = [d.capitalize() for d in table.datasets()]
    known = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
    mapped = {d: p for d, p in paper.items() if p}
    where = ", ".join(f"`{p.relative_to(p.parents[2])}`" for p in table.paths)
    if not mapped:
        return (f"Published numbers ({table.title}) exist only for {known}; no dataset here is one of "
                "them, so the table has no paper columns (a real dataset maps to one by its label or "
                "by `paper_dataset:` in the config).")
    pairs = ", ".join(f"`{d}` is the paper's {p.capitalize()}" for d, p in mapped.items())
    return (f"Paper columns: {table.title} ({where}); published numbers exist only for {known}. "
            f"Datasets: {pairs}. Rows by method: {mapping_words(table)}; {NOT_SCORED} where the paper "
            f"has no such row. {table.note}: compare the rows with each other first.")
