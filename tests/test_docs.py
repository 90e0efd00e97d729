"""The documentation stays true: a short README, links that lead somewhere, `geoloc` commands and flags that exist,
an ARCHITECTURE.md that names today's modules, and results pages rendered from a run's own tables."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import re
from pathlib import Path

import pandas as pd
import pytest

from geoloc_core.cli import main
from geoloc_core.share import results
from geoloc_core.share.results import HEADLINE_END, HEADLINE_START, RunTables, Source

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"(?:^|[\s/;&|(])geoloc\s+([a-z][a-z-]*)")


def _prose(text: str) -> str:
    """The text outside fenced blocks (a link in a code block is an example, not a link)."""
    return FENCE.sub("", text)


def _command_lines(text: str) -> list[str]:
    """Every shell line of the fenced blocks, continuations joined and comments dropped."""
    lines = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(" ".join(re.split(r"(?:^|\s)#", line, maxsplit=1)[0].split()))
    return lines


@functools.cache
def _help(command: str) -> str | None:
    """`geoloc COMMAND --help` as printed, or None where there is no such command."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as done:
        main([command, "--help"])
    return out.getvalue() if done.value.code == 0 else None


def test_the_readme_reads_in_five_minutes():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; at most 200 (move the detail to docs/)"


def _anchors(doc: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", _prose(doc.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading(doc: Path):
    missing = []
    for target in LINK.findall(_prose(doc.read_text())):
        path, _, anchor = target.partition("#")
        if re.match(r"^[a-z]+:", path):  # http(s):, mailto:
            continue
        linked = doc.parent / path if path else doc
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            missing.append(target)
    assert not missing, f"{doc.relative_to(REPO)} links to missing files or headings: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_geoloc_command_in_a_code_block_exists_with_its_flags(doc: Path):
    wrong = []
    for line in _command_lines(doc.read_text()):
        for match in COMMAND.finditer(line):
            command = match.group(1)
            usage = _help(command)
            if usage is None:
                wrong.append(f"`geoloc {command}`: no such command")
                continue
            rest = re.split(r"&&|\|\||[;|]", line[match.end():], maxsplit=1)[0]
            for flag in re.findall(r"(?:^|\s)(--[a-z][a-z0-9-]*)", rest):
                if not re.search(rf"{re.escape(flag)}\b", usage):
                    wrong.append(f"`geoloc {command} {flag}`: no such flag")
    assert not wrong, f"{doc.relative_to(REPO)}: {wrong}"


def test_the_checks_catch_what_they_are_for():
    assert _help("predict") is not None and _help("predicts") is None
    assert _command_lines("```bash\n.venv/bin/geoloc predict x \\\n  --run r  # --not-a-flag\n```\n") == [
        ".venv/bin/geoloc predict x --run r"]
    assert [m.group(1) for m in COMMAND.finditer("a && .venv/bin/geoloc show --run r; geoloc_core x")] == ["show"]
    assert "where-to-add-" in _anchors(REPO / "ARCHITECTURE.md")  # "## Where to add ...", as GitHub links it


def test_architecture_names_every_module_of_today_and_no_other():
    text = (REPO / "ARCHITECTURE.md").read_text()
    core = REPO / "geoloc_core"
    modules = {p.relative_to(core).as_posix() for p in core.rglob("*.py") if p.name != "__init__.py" and "/" in
               p.relative_to(core).as_posix()}
    named_paths = set(re.findall(r"\b(\w+/\w+\.py)\b", text))
    named = set(re.findall(r"\b(\w+\.py)\b", text))
    tests = REPO / "tests"  # laid out in folders: `tests/app/test_browser.py` is named as app/test_browser.py
    gone = [p for p in named_paths if not ((core / p).exists() or (REPO / p).exists() or (tests / p).exists())]
    gone += [n for n in named if not any(core.rglob(n)) and not (REPO / n).exists() and not any(REPO.glob(f"*/{n}"))
             and not any(tests.rglob(n))]
    assert not gone, f"ARCHITECTURE.md names files that do not exist: {sorted(gone)}"
    unnamed = sorted(m for m in modules if m not in named_paths and Path(m).name not in named)
    assert not unnamed, f"ARCHITECTURE.md does not name these modules: {unnamed}"


def test_the_readme_has_its_generated_headline_markers():
    readme = (REPO / "README.md").read_text()
    assert 0 <= readme.find(HEADLINE_START) < readme.find(HEADLINE_END)


# results pages ---------------------------------------------------------------------------------------------------

def _script():
    spec = importlib.util.spec_from_file_location("results_script", REPO / "scripts" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE = Source(name="tiny", data="tests/manifest", run="RUN", commands=("geoloc run DATA --run RUN",),
                commit="abc1234", machine="2 CPU cores")


def test_a_results_page_is_rendered_from_a_tiny_runs_own_tables(tiny_run: Path, tmp_path: Path):
    from geoloc_core.runs.folders import Run
    from geoloc_core.runs.stages import summary_rows

    assert main(["compare", "--run", str(tiny_run), "--descriptors", "cls", "--k", "5"]) == 0
    script = _script()
    tables = script.read_tables(Run(tiny_run))
    assert tables.summary is not None and tables.compare is not None
    assert tables.experiment is None and tables.levers is None and tables.compare_folds is None  # not run: no section
    text = results.page(SOURCE, tables)
    assert text.startswith("# tiny\n") and "abc1234" in text and "2 CPU cores" in text
    assert "`geoloc run DATA --run RUN`" in text
    assert "## w/o" in text and "## Every locator, the run's one split" in text and "Table 1" not in text
    for row in summary_rows(tiny_run):  # each graph's w/o row, its region count as the run recorded it
        assert re.search(rf"^\| {row['graph']} \| .*\| {row['n_regions']} \|", text, re.M)
    compare = pd.read_csv(Run(tiny_run).compare_table)
    for method in compare["method"]:
        assert f"| {method} |" in text
    default = compare[compare["within_radius"].notna()].iloc[0]  # the verified default: its radius checked
    assert f"with a 90 % radius of {results._distance(default['radius_km@90'], False)}" in text

    sources = tmp_path / "sources.toml"
    sources.write_text(f'[[source]]\nname = "tiny"\ndata = "tests/manifest"\nrun = "{tiny_run}"\n'
                       'commands = ["geoloc run DATA"]\ncommit = "abc1234"\nmachine = "here"\n'
                       '[[source]]\nname = "elsewhere"\ndata = "x"\nrun = "/nonexistent/run"\ncommands = []\n'
                       'commit = "0"\nmachine = "there"\n')
    out, readme = tmp_path / "results", tmp_path / "README.md"
    out.mkdir()
    (out / "archive.md").write_text("# old\n")
    readme.write_text(f"# x\n{HEADLINE_START}\nold sentence\n{HEADLINE_END}\nrest\n")
    assert script.main(["--sources", str(sources), "--out", str(out), "--readme", str(readme)]) == 0
    written = Source("tiny", "tests/manifest", str(tiny_run), ("geoloc run DATA",), "abc1234", "here")
    assert (out / "tiny.md").read_text() == results.page(written, tables)
    assert not (out / "elsewhere.md").exists()  # no run here: its page (none yet) is left as it is
    listing = (out / "README.md").read_text()
    assert "[tiny](tiny.md)" in listing and "[old](archive.md)" in listing and "elsewhere" not in listing
    new = readme.read_text()
    assert "old sentence" not in new and "a median" in new and new.endswith(f"{HEADLINE_END}\nrest\n")


def test_tables_render_in_metres_at_campus_scale_with_signed_verdicts():
    table = pd.DataFrame({"method": ["a", "b"], "median_km": [0.0262, 0.0401], "median_km_lo": [0.023, 0.035],
                          "median_km_hi": [0.0295, 0.043], "acc@0.1km": [0.85, 0.79], "acc@2500km": [1.0, 1.0]})
    text = results.markdown_table(table, ("method", "median_km", "acc@*"), metres=True)
    assert text.splitlines()[0] == "| method | median_m | acc@0.1km |"  # acc@2500km is 1 everywhere: it tells nothing
    assert "| a | 26.2 [23.0, 29.5] | 0.850 |" in text
    verdicts = pd.DataFrame({"comparison": ["a vs b"], "metric": ["median_km"], "difference": [-0.014], "lo": [-0.018],
                             "hi": [-0.009], "verdict": ["better"]})
    assert "| a vs b | median_m | -14.0 [-18.0, -9.00] | **better** |" in results.verdict_table(verdicts, metres=True)
    assert results.page(SOURCE, RunTables()).count("\n## ") == 0  # a run with no tables: the heading alone
    summary = pd.DataFrame({"graph": ["dt"], "n_regions": [7], "acc": [0.258], "median_km": [131.854]})
    assert results.headline(SOURCE, RunTables(summary=summary)) == (
        "On tiny, a classifier over the DT regions of pretrained features (w/o) puts a held-out photo in the right one "
        "of 7 regions 25.8 % of the time, and a median 132 km from where it was taken.")


def test_a_page_has_a_section_per_table_with_intervals_and_verdicts():
    estimates = {"median_km": [131.9, 144.6], "median_km_lo": [120.0, 129.7], "median_km_hi": [153.1, 158.1],
                 "acc@25km": [0.0625, 0.038], "acc@25km_lo": [0.040, 0.023], "acc@25km_hi": [0.085, 0.055]}
    compare = pd.DataFrame({"method": ["verified: top1+clusters+gallery", "kNN-CLS vote"], **estimates,
                            "radius_km@90": [261.0, 252.0]})
    verdicts = pd.DataFrame({"comparison": ["verified vs kNN-CLS vote"], "metric": ["acc@25km"], "difference": [0.023],
                             "lo": [0.003], "hi": [0.045], "verdict": ["better"]})
    folds = pd.DataFrame({"fold": [0, 1], "n_locations": [30, 30], "n_photos": [120, 120],
                          "within_radius": [0.81, 0.89]})
    experiment = pd.DataFrame({"graph": ["dt", float("nan")], "method": ["w/o", "Mesh"], "acc": [0.27, 0.33],
                               "n_regions": [7.0, 7.2], "median_km": [130.0, 120.0]})
    tables = RunTables(compare=compare, compare_verdicts=verdicts, compare_folds=folds,
                       cross_validated=(results.CrossValidated("5-fold over locations, seed 0", experiment, verdicts),),
                       levers=compare.assign(method=["default", "flip (test-time)"]), levers_verdicts=verdicts)
    text = results.page(SOURCE, tables)
    assert [h for h in text.splitlines() if h.startswith("## ")] == [
        "## Table 1, 5-fold over locations, seed 0 (`geoloc experiment --folds`)",
        "## Every locator, 2-fold over locations (`geoloc compare`)",
        "## Accuracy levers, one at a time (`geoloc levers`)"]
    assert "| verified: top1+clusters+gallery | 132 [120, 153] | 0.062 [0.040, 0.085] | 261 |" in text
    assert "| kNN-CLS vote | 145 [130, 158] | 0.038 [0.023, 0.055] | 252 |" in text
    assert "| verified vs kNN-CLS vote | acc@25km | +0.023 [+0.003, +0.045] | **better** |" in text
    assert "|  | Mesh | 0.330 | 7.2 | 120 |" in text and "| 0 | 30 | 120 | 0.810 |" in text
    assert text.count("**better**") == 3
    assert results.headline(SOURCE, tables) == ("On tiny, geoloc's default predictor places a held-out photo a median "
                                                "132 km from where it was taken, with a 90 % radius of 261 km "
                                                "(plain retrieval, kNN-CLS vote: 145 km).")
