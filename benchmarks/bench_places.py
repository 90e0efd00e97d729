"""How much grouping by exact coordinate flatters the figures: the same photos graded with locations held out by exact
coordinate (as before places) and by place, paired photo by photo.

    .venv/bin/python benchmarks/bench_places.py knn PLACES_RUN [--folds 5]
    .venv/bin/python benchmarks/bench_places.py compare EXACT_RUN PLACES_RUN

`knn`: kNN-1 (cosine on the run's embeddings) under K-fold over exact coordinates and K-fold over the run's places
(`location_folds`, seed 0): every photo held out once under each protocol. Cheap: no predictor is built.
`compare`: EXACT_RUN ingested as before places, PLACES_RUN with the defaults, both after `geoloc compare --folds K`:
each method's figures from compare.csv, and the verified default's answers (compare_predictions.csv) paired.
Each paired figure: exact - places with a 95 % interval from a bootstrap over PLACES_RUN's places (one resample of
places draws the same photos under both protocols).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base.geo import haversine_km
from geoloc_core.evaluate.stats import location_folds
from geoloc_core.runs.folders import Run

_FIGURES = {"median_km": lambda e: float(np.median(e)), "acc@100m": lambda e: float(np.mean(e <= 0.1)),
            "acc@1km": lambda e: float(np.mean(e <= 1.0)), "acc@25km": lambda e: float(np.mean(e <= 25.0))}


def paired_rows(e_exact: np.ndarray, e_places: np.ndarray, places: np.ndarray, boot: int, seed: int) -> list[dict]:
    """Per figure: exact, places, exact - places and its 95 % interval from a bootstrap over `places` (N,) labels."""
    codes = pd.factorize(pd.Series(places))[0]
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]) for _ in range(boot)]
    rows = []
    for name, f in _FIGURES.items():
        diffs = np.array([f(e_exact[d]) - f(e_places[d]) for d in draws])
        low, high = np.quantile(diffs, [0.025, 0.975])
        rows.append({"figure": name, "exact": f(e_exact), "places": f(e_places),
                     "exact - places": f(e_exact) - f(e_places),
                     "95% low": float(low), "95% high": float(high),
                     "verdict": "no detectable difference" if low <= 0 <= high else "differs"})
    return rows


def knn1_errors(run: Run, groups: np.ndarray, folds: int) -> np.ndarray:
    """(N,) km from each photo to its nearest database photo (cosine), each photo held out once (K-fold)."""
    emb, _ = run.read_embeddings()
    table = run.photo_table()
    fold = location_folds(groups, folds, seed=0)
    errors = np.empty(len(emb))
    for f in range(folds):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        best = train[np.argmax(emb[test] @ emb[train].T, axis=1)]
        errors[test] = haversine_km(table.lat_deg[best], table.lon_deg[best], table.lat_deg[test], table.lon_deg[test])
    return errors


def exact_groups(run: Run) -> np.ndarray:
    """Each exact coordinate (to 1e-7 degrees) its own location: the grouping before places."""
    frame = run.photo_table().frame
    return np.array([f"{a:.7f},{b:.7f}" for a, b in zip(frame["lat_deg"], frame["lon_deg"])])


def method_rows(run: Run, protocol: str) -> pd.DataFrame:
    """Each method's figures from compare.csv (intervals as compare wrote them)."""
    table = pd.read_csv(run.compare_table)
    figures = ("median_km", "acc@100m", "acc@1km", "acc@25km")
    keep = [c for c in table.columns if c == "method" or any(c.startswith(f) for f in figures)]
    return table[keep].assign(protocol=protocol)


def markdown(frame: pd.DataFrame) -> str:
    """A table as Markdown, numbers to 3 decimals (for docs/results)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("knn", "compare"))
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    places = Run(a.runs[-1])
    frame = places.photo_table().frame
    print(f"{places.root}: {len(frame)} photos, {len(set(exact_groups(places)))} exact coordinates, "
          f"{frame['group'].nunique()} places")
    if a.mode == "knn":
        e_exact = knn1_errors(places, exact_groups(places), a.folds)
        e_places = knn1_errors(places, frame["group"].to_numpy(), a.folds)
        groups = frame["group"].to_numpy()
    else:
        exact = Run(a.runs[0])
        pd.set_option("display.width", 250)
        rows = pd.concat([method_rows(exact, "exact"), method_rows(places, "places")])
        print(rows.to_string(index=False, float_format="%.3f"))
        answers = [pd.read_csv(r.compare_predictions)[["path", "error_km"]] for r in (exact, places)]
        both = answers[0].merge(answers[1], on="path", suffixes=("_exact", "_places"))
        both = both.merge(frame[["path", "group"]], on="path")
        e_exact, e_places, groups = (both[c].to_numpy() for c in ("error_km_exact", "error_km_places", "group"))
    print(markdown(pd.DataFrame(paired_rows(e_exact, e_places, groups, a.boot, a.seed))))


if __name__ == "__main__":
    main()
