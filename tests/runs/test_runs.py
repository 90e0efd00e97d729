"""The run folder contract: names spelled once, run names that stay inside the runs folder, fine-tuning folders."""

import ast

import pytest

from conftest import REPO
from geoloc_core.runs.folders import FinetuneRun, Run, run_in

# Every file or folder name of a run (runs/folders.py spells each); nothing else in the product may. Whole names are
# found anywhere in a string; stems only as the literal part before an f-string's field (f"graph_{kind}") or alone.
RUN_FILES = ("photos.csv", "rejected.csv", "ingest.json", "embeddings.npy", "patches.npy", "embed.json", "split.json",
             "sites.csv",
             "site_of_photo.npy", "config.json", "metrics.jsonl", "status.json", "progress.json", "job.log",
             "table.csv", "table.md",
             "predictor.json", "index.faiss", "db.csv", "vocabulary.npy", "verifier.safetensors",
             "regressor.safetensors",
             "calibration_errors.npy", "compare.csv", "compare_predictions.csv", "last.pt", "_summary.csv",
             "provenance.json")
RUN_STEMS = ("graph_", "regions_", "finetune_", "predictor_", "prefix_", "embeddings_r", "embeddings_tta_", "shards",
             "checkpoints")


def _names_a_run_file(text: str) -> bool:
    return any(name in text for name in RUN_FILES) or any(text == stem or text.endswith("/" + stem) or
                                                          (stem.endswith(("_", "_r")) and text.endswith(stem))
                                                          for stem in RUN_STEMS)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of the code that is not a docstring (f-strings' literal parts included)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_file_name_of_a_run_is_spelled_outside_the_layout_module():
    layout = REPO / "geoloc_core" / "runs" / "folders.py"
    sources = [*REPO.glob("geoloc_core/**/*.py"), *REPO.glob("views/*.py"), REPO / "app.py"]
    assert len(sources) > 20
    found = [f"{p.relative_to(REPO)}:{line}: {text!r}" for p in sources if p != layout
             for line, text in _strings(ast.parse(p.read_text())) if _names_a_run_file(text)]
    assert found == []
    spelled = {text for _, text in _strings(ast.parse(layout.read_text()))}
    # runs.py's own names
    assert all(any(_names_a_run_file(s) and name in s for s in spelled) for name in RUN_FILES + RUN_STEMS)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../escape", "/etc", ".hidden", "x/../..", "a\\b", "a" * 101])
def test_a_run_name_that_would_leave_the_runs_folder_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="run name"):
        run_in(tmp_path / "runs", name)


def test_a_plain_run_name_is_a_folder_of_the_runs_folder(tmp_path):
    assert run_in(tmp_path / "runs", "my-photos_2024.v2") == (tmp_path / "runs" / "my-photos_2024.v2").resolve()


def test_a_new_fine_tuning_run_never_reuses_a_folder(tmp_path):
    run = Run(tmp_path)
    first = run.new_finetune("dt")
    first.root.mkdir()
    second = run.new_finetune("dt")
    second.root.mkdir()
    run.experiment.finetune("dt").root.mkdir(parents=True)
    (tmp_path / "finetune_gg").mkdir()
    assert first.root.name == "finetune_dt" and second.root.name == "finetune_dt-2"
    assert [f.root for f in run.finetune_dirs("dt")] == [first.root, second.root, run.experiment.finetune("dt").root]
    assert len(run.finetune_dirs()) == 4


def test_a_fine_tuning_folder_finds_its_run_whatever_the_working_directory(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r"
    Run(run).root.mkdir(parents=True)
    Run(run).photos.write_text("path\n")
    ft = FinetuneRun(run / "finetune_dt")
    ft.record_config("run_dir", "runs/r")  # as an older version recorded it, relative to where it was started
    monkeypatch.chdir(tmp_path / "runs")
    assert ft.run_dir() == run.resolve()
    ft.record_config("run_dir", str(run.resolve()))
    assert ft.run_dir() == run.resolve()
