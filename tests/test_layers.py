"""The core's floors: every import (lazy ones included) runs downward, and the core needs no app library."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "geoloc_core"
FLOORS = ["config", "base", "ingest", "features", "regions", "evaluate", "runs", "learn", "locate", "analysis", "share",
          "server", "cli"]  # lowest first: a module may import its own floor and the ones before it
APP_LIBRARIES = {"streamlit", "plotly", "pydeck"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth (function-level ones included)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]
                            + ([node.module] if node.module else [])) if node.level \
                else node.module
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names] + [(node.lineno, base)]
    return found


def _floor(module: str) -> int | None:
    """The floor of a geoloc_core module (None for the package's own door, `geoloc_core` and its __main__)."""
    parts = module.split(".")
    if parts[0] != "geoloc_core" or len(parts) < 2 or parts[1] in ("__main__",):
        return None
    return FLOORS.index(parts[1]) if parts[1] in FLOORS else None


def upward_imports(root: Path = CORE) -> list[str]:
    """Every import in the core that runs against the floors' direction, as `file:line: a -> b`."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        here = _floor(_module_name(path))
        if here is None:
            continue
        for line, target in _imports(path):
            there = _floor(target)
            if there is not None and there > here:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {_module_name(path)} -> {target}")
    return wrong


def test_every_core_module_sits_on_a_floor():
    packages = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages | {"config"} == set(FLOORS)
    loose = {p.stem for p in CORE.glob("*.py")} - {"__init__", "__main__", "config"}
    assert not loose, f"modules outside every floor: {loose}"


def test_imports_run_downward():
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself: a lazy import of the CLI from a base module is reported."""
    fake = tmp_path / "geoloc_core"
    (fake / "base").mkdir(parents=True)
    (fake / "base" / "__init__.py").write_text("")
    (fake / "base" / "geo.py").write_text("def f():\n    from geoloc_core.cli import main\n    from ..locate import "
                                          "predict\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        found = upward_imports(fake)
    finally:
        REPO = saved
    assert sorted(found) == sorted(["geoloc_core/base/geo.py:2: geoloc_core.base.geo -> geoloc_core.cli",
                     "geoloc_core/base/geo.py:2: geoloc_core.base.geo -> geoloc_core.cli.main",
                     "geoloc_core/base/geo.py:3: geoloc_core.base.geo -> geoloc_core.locate.predict",
                     "geoloc_core/base/geo.py:3: geoloc_core.base.geo -> geoloc_core.locate"])


def test_the_core_imports_no_app_library():
    found = [f"{p.relative_to(REPO)}:{line}: {t}" for p in sorted(CORE.rglob("*.py")) for line, t in _imports(p)
             if t.split(".")[0] in APP_LIBRARIES]
    assert found == []


BLOCK_APP = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'streamlit', 'plotly', 'pydeck'}:
            raise ModuleNotFoundError(f'No module named {name!r} (hidden by the test)', name=name)
sys.meta_path.insert(0, Absent())
"""


def run_without_app(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python code run in a fresh interpreter where streamlit, plotly and pydeck cannot be imported."""
    return subprocess.run([sys.executable, "-c", BLOCK_APP + code], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_the_hiding_works(tmp_path):
    done = run_without_app("import plotly", tmp_path)
    assert done.returncode != 0 and "hidden by the test" in done.stderr


def test_every_core_module_imports_without_the_app_libraries(tmp_path):
    modules = sorted(_module_name(p) for p in CORE.rglob("*.py") if p.stem != "__main__")
    done = run_without_app(f"import importlib, sys; sys.path.insert(0, {str(REPO)!r})\n"
                           f"for m in {modules!r}: importlib.import_module(m)\nprint('ok')", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


@pytest.mark.slow
def test_the_main_commands_run_without_the_app_libraries(tmp_path, manifest_folder, tiny_checkpoint, isolated_cache):
    """`geoloc run`, `predict`, `finetune`, `compare` and `report` on tiny real photos with no
    streamlit, plotly, pydeck."""
    run, photo = tmp_path / "run", sorted((manifest_folder / "images").glob("*.jpg"))[0]
    model = ["--model", "tiny-vit-test", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    steps = [["run", str(manifest_folder), "--run", str(run), "--test-frac", "0.25", *model],
             ["predict", str(photo), "--run", str(run), "--out", str(tmp_path / "p.csv"), "--k", "3", "--device",
              "cpu"],
             ["finetune", "--run", str(run), "--rounds", "1", "--epochs", "1", "--unfrozen-blocks", "1", "--batch-size",
              "8", "--device", "cpu"],
             ["compare", "--run", str(run), "--descriptors", "cls", "--k", "5"],
             ["report", "--run", str(run), "--out", str(tmp_path / "report.html"), "--no-tiles"]]
    code = f"""import sys; sys.path.insert(0, {str(REPO)!r})
from geoloc_core.cli import main
for argv in {steps!r}:
    assert main(argv) == 0, argv
print('ok')
"""
    done = run_without_app(code, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "p.csv").exists()
    assert "plotly is not installed" in (tmp_path / "report.html").read_text()
