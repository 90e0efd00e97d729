"""What a cross-validated experiment costs: K folds against the run's one split, measured in the same call.

    .venv/bin/python benchmarks/bench_crossval.py --run runs/croatia [--folds 5] [--graphs dt] [--rounds 3] [--epochs 4]

Both go to temporary folders (the run's own experiment folders are left alone); the prefix tokens are
computed first and shared, as the real commands share them, so the figures are the fine-tuning and
baselines themselves. Prints seconds for the one split, for each fold and in all, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_core import machine  # noqa: E402
from geoloc_core.analysis.experiment import cross_validate, run_experiment  # noqa: E402
from geoloc_core.config import CrossValConfig, FinetuneConfig  # noqa: E402
from geoloc_core.learn.finetune import FinetuneContext  # noqa: E402
from geoloc_core.runs.folders import Experiment  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--graphs", default="dt", help="comma-separated")
    ap.add_argument("--rounds", type=int, default=FinetuneConfig.rounds)
    ap.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    a = ap.parse_args(argv)
    graphs = tuple(g for g in a.graphs.split(",") if g)
    cfg = FinetuneConfig(rounds=a.rounds, epochs=a.epochs)
    FinetuneContext(a.run, cfg)  # the shared prefix tokens, outside both timings
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_experiment(a.run, cfg, graphs, Path(tmp) / "one_split")
        one = time.perf_counter() - start
        start = time.perf_counter()
        cross_validate(a.run, cfg, graphs, CrossValConfig(folds=a.folds), Path(tmp) / "folds")
        folds = time.perf_counter() - start
        per_fold = [Experiment(Path(tmp) / "folds").fold(i).experiment.table_csv.stat().st_mtime
                    for i in range(a.folds)]
    print(f"machine: {machine()}")
    print(f"{a.run}: graphs {','.join(graphs)}, {a.rounds} rounds x {a.epochs} epochs")
    print(f"one split: {one:.0f} s; {a.folds} folds: {folds:.0f} s in all ({folds / one:.2f}x the one split); "
          f"folds finished at +{', +'.join(f'{t - per_fold[0]:.0f}' for t in per_fold)} s after the first")
    return {"one_split_s": one, "folds_s": folds, "ratio": folds / one}


if __name__ == "__main__":
    main()
