"""Every benchmark of the speed-and-scale targets in one run, then one table: figure, measured, target.

    .venv/bin/python benchmarks/run_all.py [--run runs/croatia] [--quick]

`--quick` shrinks every size (10^4 points, 2 x 10^4 vectors) for a smoke run; the README's figures
come from the full sizes (10^6 points, 10^6 vectors; about 25 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_predict  # noqa: E402

import bench_core  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/default"),
                   help="a built run (for the latency and index cases)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto", help="cuda for the GPU figures")
    a = p.parse_args()
    if a.quick:
        core = ["--photos", "16", "--max-points", "10000", "--louvain-nodes", "3000", "--memory-sites", "20000"]
        predict = ["--photos", "5", "--index-size", "20000"]
    else:
        core, predict = [], []
    rows = bench_core.main(core + ["--device", a.device]) + bench_predict.main(predict + ["--run", str(a.run)])
    print(f"\n{bench_core.machine()}\n")
    print("| figure | measured | target | met |\n|---|---|---|---|")
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        print(f"| {r['figure']} | {r['measured']} | {r['target']} | {met} |")


if __name__ == "__main__":
    main()
