"""Write docs/results/ from the run folders that docs/results/sources.toml lists: one page per data set.

    .venv/bin/python scripts/results.py [--sources docs/results/sources.toml] [--out docs/results] [--readme README.md]

Every figure comes from a table a run folder holds, read through `Run` (which alone names a run's files); nothing is
measured here. A data set whose run folder is not on this machine keeps the page it has, and the script says so.
README.md's headline sentence is rewritten from the first data set (`share.results.headline`).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere, with this checkout's geoloc_core

from geoloc_core.runs.folders import Experiment, Run  # noqa: E402
from geoloc_core.runs.stages import summary_rows  # noqa: E402
from geoloc_core.share.results import (  # noqa: E402
    CrossValidated,
    RunTables,
    Source,
    headline,
    index,
    page,
    replace_headline,
)


def read_sources(path: Path) -> list[Source]:
    """The `[[source]]` entries of sources.toml, run folders relative to the repository unless absolute."""
    entries = tomllib.loads(path.read_text())["source"]
    return [Source(name=e["name"], data=e["data"], run=e["run"], commands=tuple(e["commands"]), commit=e["commit"],
                   machine=e["machine"], notes=e.get("notes", "")) for e in entries]


def run_folder(source: Source) -> Path:
    path = Path(source.run).expanduser()
    return path if path.is_absolute() else REPO / path


def _csv(path: Path) -> pd.DataFrame | None:
    # empty cells (a baseline row's graph) are NaN, as the report reads them; "NA" is no region's name
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else None


def _current(run: Run, files: list[Path]) -> bool:
    """Whether the table `files` exists and still traces to the run as it is (a stale one is left out, and said)."""
    if not files[0].exists():
        return False
    if why := run.stale_table(files):
        print(f"{files[0]}: left out ({why})")
    return why is None


def _cross_validated(run: Run, experiment: Experiment) -> CrossValidated | None:
    if not _current(run, experiment.files):
        return None
    config = experiment.read_config()
    cv, ft = config.get("cross_validation", {}), config.get("finetune", {})
    label = (f"{cv.get('folds', '?')}-fold over locations, seed {cv.get('seed', '?')}, "
             f"{ft.get('rounds', '?')} rounds x {ft.get('epochs', '?')} epochs")
    return CrossValidated(label, _csv(experiment.table_csv), _csv(experiment.verdicts))


def read_tables(run: Run) -> RunTables:
    """Every table the tools wrote into the run folder that still traces to it (None for a command not run, or run
    on other photos, embeddings or settings)."""
    rows = summary_rows(run.root)
    compared, levers = _current(run, run.compare_files), _current(run, run.levers_files)
    return RunTables(
        summary=pd.DataFrame(rows) if rows else None,
        experiment=_csv(run.experiment.table_csv) if _current(run, run.experiment.files) else None,
        cross_validated=tuple(cv for e in run.cross_validations() if (cv := _cross_validated(run, e)) is not None),
        compare=_csv(run.compare_table) if compared else None,
        compare_verdicts=_csv(run.compare_verdicts) if compared else None,
        compare_folds=_csv(run.compare_folds) if compared else None,
        levers=_csv(run.levers_table) if levers else None,
        levers_verdicts=_csv(run.levers_verdicts) if levers else None)


def _title(page: Path) -> str:
    """A page's first heading, else its file name."""
    heading = next((line for line in page.read_text().splitlines() if line.startswith("# ")), None)
    return heading.removeprefix("# ").strip() if heading else page.stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", type=Path, default=REPO / "docs/results/sources.toml")
    p.add_argument("--out", type=Path, default=REPO / "docs/results")
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="whose headline sentence to rewrite")
    a = p.parse_args(argv)
    sources = read_sources(a.sources)
    a.out.mkdir(parents=True, exist_ok=True)
    sentence = None
    for source in sources:
        folder, target = run_folder(source), a.out / f"{source.name}.md"
        if not Run(folder).photos.exists():
            print(f"{source.name}: no run at {folder}; {target} kept as it is")
            continue
        tables = read_tables(Run(folder))
        target.write_text(page(source, tables))
        sentence = sentence or headline(source, tables)
        print(f"{source.name}: {folder} -> {target}")
    names = {f"{s.name}.md" for s in sources}
    pages = [s.name for s in sources if (a.out / f"{s.name}.md").exists()]
    others = [(f.name, _title(f)) for f in sorted(a.out.glob("*.md")) if f.name not in names and f.name != "README.md"]
    (a.out / "README.md").write_text(index(pages, others))
    if sentence and a.readme.exists():
        a.readme.write_text(replace_headline(a.readme.read_text(), sentence))
        print(f"{a.readme}: headline rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
