"""Every code block of README.md and docs/ is checked against the code, so the docs cannot go stale.

- ```bash / ```sh: each ``python -m benchmark ...`` command (also under torchrun) is parsed by the
  CLI's own parser; a config file it names must exist and load with the command's overrides; a
  ``run`` or ``plan`` of a quick suite is planned (``plan`` trains nothing).
- ```python: compiled; a block that reads a report CSV is run against a CSV in the report's format.
- ```yaml: parsed; a whole suite is loaded with ``benchmark.config``, a fragment (a section or two)
  is loaded inside a quick suite, so an unknown key or a wrong type fails.
- ```toml: parsed. ```text: output, layouts and pseudo-code, skipped. A fence without a language
  fails, so every new block is either checked or marked as text.

Prose is checked too: every config file named (``configs/*.yaml``, ``paper_*.yaml``, ``quick*.yaml``)
exists, and every relative link points at a file and, with ``#anchor``, at one of its headings.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmark import cli
from benchmark.config import SuiteSettings, load_suite, suite_from_dict
from benchmark.core.errors import BenchmarkError
from benchmark.core.yaml_io import load_yaml
from benchmark.report.results import CSV_COLUMNS, FINISHED

from conftest import ROOT, doc_plugin

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

SHELL, PYTHON, YAML, TOML, TEXT = ("bash", "sh"), ("python",), ("yaml",), ("toml",), ("text",)
QUICK_BASES = ["configs/quick.yaml", "configs/quick_multimodal.yaml", "configs/quick_compression.yaml",
               "configs/quick_single_image.yaml"]
"""Suites a YAML fragment is loaded into: one of each task, so that every section has a home."""
REPLACED_SECTIONS = {"datasets", "methods", "plugins"}
"""Sections a fragment states in full (the base's entries are dropped); the others merge key by key."""


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line} ({self.lang})"


def blocks_of(doc: Path) -> list[Block]:
    """The fenced blocks of a markdown file (fences may be indented, e.g. in a list item)."""
    out, lines = [], doc.read_text().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^( *)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start:i]]
        out.append(Block(doc, start, lang, "\n".join(body) + "\n"))
        i += 1
    return out


ALL_BLOCKS = [b for doc in DOCS for b in blocks_of(doc)]


def by_lang(langs: tuple[str, ...]) -> list[Block]:
    return [b for b in ALL_BLOCKS if b.lang in langs]


def prose_of(doc: Path) -> str:
    """The text outside fenced blocks."""
    return re.sub(r"^( *)```.*?^\1```", "", doc.read_text(), flags=re.S | re.M)


# -- the plugin examples -------------------------------------------------------------------------

def plugin_folder(doc: Path) -> Path:
    """Where a doc's configs and commands find ``my_methods.py``: its own example, else the README's."""
    own = "# my_methods.py\n" in doc.read_text()
    return doc_plugin(doc if own else ROOT / "README.md")[0].parent


# -- fences ----------------------------------------------------------------------------------------

def test_every_block_names_a_language_the_test_knows():
    known = SHELL + PYTHON + YAML + TOML + TEXT
    unknown = [str(b) + f" '{b.lang}'" for b in ALL_BLOCKS if b.lang not in known]
    assert not unknown, f"fences without a checked language (use ```text for output): {unknown}"


def test_the_docs_have_blocks_of_every_kind():
    """A parser that found nothing would pass every check below."""
    assert all(by_lang(langs) for langs in (SHELL, PYTHON, YAML, TEXT)), [b.lang for b in ALL_BLOCKS]


# -- shell -----------------------------------------------------------------------------------------

def benchmark_commands(block: Block) -> list[list[str]]:
    """The argument lists after ``-m benchmark`` in a shell block (continuations joined, comments
    dropped, commands split at ``&&``, ``||``, ``;`` and ``|``)."""
    out = []
    for line in block.text.replace("\\\n", " ").split("\n"):
        tokens = shlex.split(line, comments=True)
        command: list[str] = []
        for token in tokens + [";"]:
            if token in ("&&", "||", ";", "|"):
                for i in range(len(command) - 1):
                    if command[i] == "-m" and command[i + 1] == "benchmark":
                        out.append(command[i + 2:])
                command = []
            else:
                command.append(token)
    return out


def check_command(argv: list[str], block: Block, plan: bool = True) -> None:
    """Parse ``argv`` with the CLI's parser; load the config it names with its overrides; plan a quick
    suite. Raises AssertionError naming the block."""
    where = f"{block}: python -m benchmark {' '.join(argv)}"
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            args = cli.build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{where}: the CLI refuses it: {err.getvalue().strip()}") from None
    config = getattr(args, "config", None)
    if not config or not config.endswith(".yaml"):
        return  # a placeholder (CONFIG) or a command without a config
    assert (ROOT / config).is_file(), f"{where}: config file '{config}' does not exist"
    folder = plugin_folder(block.doc)
    overrides = [o.replace("$PWD", str(folder)) for o in getattr(args, "overrides", None) or []]
    try:
        suite = load_suite(ROOT / config, overrides)
    except BenchmarkError as exc:
        raise AssertionError(f"{where}: {exc}") from None
    if plan and args.command in ("run", "plan") and Path(config).name.startswith("quick"):
        from benchmark.plan import format_plan, plan_suite
        result = plan_suite(suite)
        assert not result.problems, f"{where}: plan finds problems:\n{format_plan(result)}"


SHELL_BLOCKS = by_lang(SHELL)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=str)
def test_shell_blocks_parse_with_the_cli_and_name_existing_configs(block):
    for argv in benchmark_commands(block):
        check_command(argv, block)


def test_the_shell_check_catches_an_unknown_flag_a_missing_config_and_a_bad_override():
    block = SHELL_BLOCKS[0]
    for argv, expected in ((["run", "configs/quick.yaml", "--dry-rn"], "unrecognized arguments"),
                           (["plan", "configs/no_such_suite.yaml"], "does not exist"),
                           (["plan", "configs/quick.yaml", "tasks.single_modal.ngff=3"], "ngff"),
                           (["lst"], "invalid choice")):
        with pytest.raises(AssertionError, match=expected):
            check_command(argv, block, plan=False)
    assert benchmark_commands(Block(block.doc, 1, "bash", "a && .venv/bin/python -m benchmark report X  # c\n"
                                    "torchrun --standalone -m benchmark run C \\\n  k=1\n")) == \
        [["report", "X"], ["run", "C", "k=1"]]



# -- prose: config files and links ---------------------------------------------------------------

def config_names(text: str) -> set[str]:
    """Config files a text names: ``configs/<name>.yaml``, and ``paper_*.yaml`` / ``quick*.yaml``
    without the folder."""
    names = set(re.findall(r"configs/([\w-]+\.yaml)", text))
    names |= set(re.findall(r"(?<![\w/.-])((?:paper|quick)[\w-]*\.yaml)", text))
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_config_file_a_doc_names_exists(doc):
    missing = sorted(n for n in config_names(doc.read_text()) if not (ROOT / "configs" / n).is_file())
    assert not missing, f"{doc.relative_to(ROOT)} names config files that do not exist: {missing}"


def anchors_of(doc: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings (lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered)."""
    anchors, counts = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", prose_of(doc), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        anchors.add(f"{slug}-{n}" if n else slug)
        counts[slug] = n + 1
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose_of(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors_of(file):
            broken.append(f"{target} (no heading '#{anchor}')")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"



# -- python ----------------------------------------------------------------------------------------

PYTHON_BLOCKS = by_lang(PYTHON)
REPORT_CSV = re.compile(r"""read_csv\(["'](results/reports/(\w+)_results\.csv)["']\)""")


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=str)
def test_python_blocks_compile(block):
    try:
        ast.parse(block.text, filename=str(block))
    except SyntaxError as exc:
        raise AssertionError(f"{block}, line {exc.lineno} of the block: {exc.msg}") from None


@pytest.mark.parametrize("block", [b for b in PYTHON_BLOCKS if REPORT_CSV.search(b.text)], ids=str)
def test_python_blocks_that_read_a_report_csv_run_on_one(block, tmp_path, monkeypatch, capsys):
    """A CSV in the report's columns with its status values and metric names stands in for a run's."""
    import pandas as pd
    relative = REPORT_CSV.search(block.text).group(1)
    rows = [{"task": "single_modal", "dataset": "synthetic_objects", "method": m, "seed": s,
             "metric": metric, "value": v, "status": FINISHED}
            for m in ("none", "cut") for s in (0, 1) for metric, v in (("FID", 100.0 + s), ("KIDx100", 5.0))]
    rows.append({"task": "single_modal", "dataset": "synthetic_objects", "method": "fastcut", "seed": 0,
                 "metric": "", "value": None, "status": "missing: not run yet"})
    (tmp_path / relative).parent.mkdir(parents=True)
    pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(tmp_path / relative, index=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.text, str(block), "exec"), {"__name__": "doc_block"})
    assert "cut" in capsys.readouterr().out


# -- yaml and toml ---------------------------------------------------------------------------------

YAML_BLOCKS = by_lang(YAML)
SECTIONS = set(SuiteSettings.__dataclass_fields__)


def merged(base: dict, fragment: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in REPLACED_SECTIONS:
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_yaml(block: Block, tmp_path: Path) -> None:
    try:
        data = load_yaml(block.text)
    except yaml.YAMLError as exc:
        raise AssertionError(f"{block}: not valid YAML: {exc}") from None
    assert isinstance(data, dict), f"{block}: expected a mapping"
    unknown = set(data) - SECTIONS
    assert not unknown, f"{block}: not suite sections: {sorted(unknown)} (valid: {sorted(SECTIONS)})"
    source = str(plugin_folder(block.doc) / "suite.yaml")
    if {"suite", "tasks", "datasets", "methods"} <= set(data):
        bases = [{}]  # a whole suite
    else:
        bases = [load_yaml((ROOT / b).read_text()) for b in QUICK_BASES]
    errors = []
    for base in bases:
        raw = merged(base, data)
        raw["output_dir"] = str(tmp_path)
        try:
            suite_from_dict(raw, source, tmp_path)
            return
        except BenchmarkError as exc:
            errors.append(f"{raw.get('suite')}: {exc}")
    raise AssertionError(f"{block}: does not load as a suite or inside any quick suite:\n" + "\n".join(errors))


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=str)
def test_yaml_blocks_load_as_suite_configs(block, tmp_path):
    check_yaml(block, tmp_path)


@pytest.mark.parametrize("block", by_lang(TOML), ids=str)
def test_toml_blocks_parse(block):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    tomllib.loads(block.text)


# -- the checks catch what they are for ------------------------------------------------------------

def test_the_checks_catch_a_bad_key_a_bad_type_a_syntax_error_and_a_missing_config(tmp_path):
    doc = ROOT / "README.md"
    for text, expected in (("tasks:\n  single_modal: {ngff: 3}\n", "ngff"),
                           ("evaluation:\n  kid_subsets: many\n", "kid_subsets"),
                           ("launcher:\n  type: slurm\n  gpus: 1\n", "gpus"),
                           ("suite_name: x\n", "not suite sections")):
        with pytest.raises(AssertionError, match=expected):
            check_yaml(Block(doc, 1, "yaml", text), tmp_path)
    with pytest.raises(AssertionError, match="line 2"):
        test_python_blocks_compile(Block(doc, 1, "python", "x = 1\ndef f(:\n"))
    assert config_names("run `configs/quick.yaml` and paper_maps.yaml, not my.yaml") == \
        {"quick.yaml", "paper_maps.yaml"}
