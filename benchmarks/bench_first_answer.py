"""The first answer after `bash scripts/main.sh`: how long the Predict page takes to locate the first photo picked,
in a fresh process (a new app server: nothing loaded yet), beside the same page's second photo (everything loaded).

    .venv/bin/python benchmarks/bench_first_answer.py [--run runs/croatia-streetview] [--repeats 3]

`geoloc run` builds the page's default predictor in its job, so the first answer loads it (the index, the verifier
and the encoder's weights) and builds nothing. For reference, the same run's predictor built from scratch, as the
page did on its first upload before: the time a first upload used to wait on top of the load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_core import machine  # noqa: E402

_SESSION = """
import json, sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=600)
at.session_state["run_dir"] = sys.argv[2]
at.run()
names = at.multiselect[0].options
times = []
for name in names[:2]:  # the first photo (cold: the predictor and encoder load), then a second one (warm)
    start = time.perf_counter()
    at.multiselect[0].set_value([name]).run()
    times.append(time.perf_counter() - start)
    assert not at.exception and len(at.subheader) == 1, [i.value for i in at.info]
print(json.dumps(times))
"""


def first_answers(run: Path) -> tuple[float, float]:
    """(first, second) seconds of one fresh app process locating one held-out photo after another."""
    out = subprocess.run([sys.executable, "-c", _SESSION, str(REPO / "views" / "predict.py"), str(run.resolve())],
                         capture_output=True, text=True, check=True, cwd=REPO)
    first, second = json.loads(out.stdout.strip().splitlines()[-1])
    return first, second


def build_from_scratch(run: Path) -> float:
    """Seconds to build the page's default predictor in memory, as opening it without a saved one does (nothing is
    saved: the run is left as it is)."""
    from geoloc_core.config import PredictConfig
    from geoloc_core.locate.build import build_predictor

    start = time.perf_counter()
    build_predictor(run, PredictConfig().predictor, "train", PredictConfig().graph)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=REPO / "runs" / "croatia-streetview")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    pairs = [first_answers(a.run) for _ in range(a.repeats)]
    build = build_from_scratch(a.run)
    firsts, seconds = sorted(f for f, _ in pairs), sorted(s for _, s in pairs)
    print(f"{machine()}; run {a.run}")
    print(f"first photo in a fresh app process: median {firsts[len(firsts) // 2]:.2f} s "
          f"(all: {', '.join(f'{f:.2f}' for f in firsts)}); target <= 5 s")
    print(f"second photo, same process: median {seconds[len(seconds) // 2]:.2f} s; "
          f"first / second: {firsts[len(firsts) // 2] / seconds[len(seconds) // 2]:.1f}x")
    print(f"building the default predictor (what the first upload waited for before, on top of the load): "
          f"{build:.1f} s")


if __name__ == "__main__":
    main()
