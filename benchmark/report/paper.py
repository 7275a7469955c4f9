"""Published numbers beside a report's rows: which paper row and dataset a suite's method and dataset
stand for, published cells as the papers print them, and the note that says where they come from."""
from __future__ import annotations

from ..config import Component, Suite
from ..reference import PaperTable, paper_dataset, table_for
from .format import NOT_SCORED


def suite_table(suite: Suite, task: Component) -> PaperTable | None:
    """The published table beside ``task``'s rows: the suite's ``paper_table:``, else the task's own."""
    return table_for(task.cls.registry_name, suite.settings.paper_table)


def paper_methods(methods: list[Component], table: PaperTable | None) -> dict[str, str | None]:
    """Method label -> the paper's method name (None: not in the paper, or no table; identity, not a
    method of the suite, never is)."""
    if table is None:
        return {m.label: None for m in methods}
    return {m.label: table.paper_method(m.cls.registry_name, m.preset, m.options) for m in methods}


def dataset_paper_name(dataset: Component, table: PaperTable | None) -> str | None:
    """The published dataset a suite dataset stands for under ``table`` (None: none, or no table)."""
    if table is None:
        return None
    return paper_dataset(dataset.label, dataset.cls.registry_name, dataset.paper_dataset, table)


def published_cell(value: float | None, digits: int) -> str:
    """A published number with ``digits`` decimals, or NOT_SCORED when the paper has none."""
    return NOT_SCORED if value is None else f"{value:.{digits}f}"


def mapping_words(table: PaperTable) -> str:
    if table.method_row is not None:
        return ("by each method's options (the switches the table varies), see "
                "`benchmark/reference.py`")
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


def difference_cell(ours: float | None, published: float | None, digits: int) -> str:
    """Ours minus the published value, signed, with the published value's decimals (NOT_SCORED when
    either is missing)."""
    if ours is None or published is None:
        return NOT_SCORED
    return f"{ours - published:+.{digits}f}"


def checkpoint_choice(suite: Suite) -> str:
    """The checkpoint(s) this suite's rows are scored at."""
    validation = getattr(suite.settings, "validation", None)
    rules = [r for r in getattr(validation, "select", []) if r != "last"] if getattr(validation, "enabled", False) else []
    return "the last" + (f" (and rows for {', '.join(rules)})" if rules else "")


def protocol_flags(suite: Suite, table: PaperTable | None, test_images: dict[str, int] | None = None,
                   split: str = "test", paper_dataset: str | None = None, resolution: int | None = None) -> str:
    """A line that puts the paper's protocol beside this suite's, item by item, and flags each item
    that differs (``test_images``: 'translated' / 'reference' -> images, when known, compared with
    the paper's counts for ``paper_dataset`` where the table has them; ``split``: what the task
    scores, e.g. 'val' in the multi-modal task; ``resolution``: the side of the scored outputs)."""
    if table is None or not table.protocol:
        return ""
    e = suite.settings.evaluation
    scored = (f"every {split} image" if e.num_test_images == 0 else f"the first {e.num_test_images} {split} images")
    if test_images:
        scored += " (" + ", ".join(f"{n} {what}" for what, n in test_images.items()) + ")"
    ours = {"test images": scored,
            "FID resize": f"{e.fid_resize}" + (" (pytorch-fid's)" if e.fid_resize == "legacy" else " (clean-fid's)"),
            "reference images": "the same",
            "checkpoint": checkpoint_choice(suite)}
    paper_counts = table.test_counts.get(paper_dataset or "")
    counts = (test_images or {}).get("translated"), (test_images or {}).get("reference")
    differs = {"test images": e.num_test_images != 0 or (paper_counts is not None and None not in counts
                                                         and counts != paper_counts),
               "FID resize": e.fid_resize != "legacy" and table.protocol.get("FID resize", "").startswith("legacy"),
               "reference images": False,
               "checkpoint": "test set" in table.protocol.get("checkpoint", "") or "unstated" in
                             table.protocol.get("checkpoint", "")}
    if "torchvision" in table.protocol.get("FID resize", ""):
        differs["FID resize"] = True      # the multi-modal paper scored with another Inception network
    paper_protocol = dict(table.protocol)
    if table.resolution and resolution:
        paper_protocol["output size"] = f"{table.resolution}x{table.resolution}"
        ours["output size"] = f"{resolution}x{resolution}"
        differs["output size"] = resolution != table.resolution
    parts = []
    for item, paper in paper_protocol.items():
        flag = "**differs**" if differs.get(item) else "same"
        parts.append(f"{item}: paper {paper}; here {ours.get(item, '?')} ({flag})")
    return "Protocol against the paper: " + "; ".join(parts) + "."
