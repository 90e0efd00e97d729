"""How much grouping by exact coordinate flatters the figures: the same photos graded with locations held out by exact
coordinate (as before places) and by place, paired photo by photo.

    .venv/bin/python benchmarks/bench_places.py knn PLACES_RUN [--folds 5]
    .venv/bin/python benchmarks/bench_places.py compare EXACT_RUN PLACES_RUN
    .venv/bin/python benchmarks/bench_places.py blocks PLACES_RUN BLOCKS_RUN --block-km B

`knn`: kNN-1 (cosine on the run's embeddings) under K-fold over exact coordinates and K-fold over the run's places
(`location_folds`, seed 0): every photo held out once under each protocol. Cheap: no predictor is built.
`compare`: EXACT_RUN ingested as before places, PLACES_RUN with the defaults, both after `geoloc compare --folds K`:
each method's figures from compare.csv, and the verified default's answers (compare_predictions.csv) paired.
Each paired figure: exact - places with a 95 % interval from a bootstrap over PLACES_RUN's places (one resample of
places draws the same photos under both protocols).
`blocks`: the same photos after `geoloc compare --folds K` held out by place (PLACES_RUN) and by spatial block
(BLOCKS_RUN, a copy of the run compared with `--block-km B`): kNN-1 under both protocols, then the verified default's
answers, paired as places - blocks, the bootstrap over the blocks (the coarser unit: photos of one block are held out
together under one protocol, so they are not independent).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base.geo import haversine_km
from geoloc_core.evaluate.splits import fold_units
from geoloc_core.evaluate.stats import location_folds
from geoloc_core.runs.folders import Run

_FIGURES = {"median_km": lambda e: float(np.median(e)), "acc@100m": lambda e: float(np.mean(e <= 0.1)),
            "acc@1km": lambda e: float(np.mean(e <= 1.0)), "acc@25km": lambda e: float(np.mean(e <= 25.0))}


def paired_rows(e_exact: np.ndarray, e_places: np.ndarray, places: np.ndarray, boot: int, seed: int,
                names: tuple[str, str] = ("exact", "places")) -> list[dict]:
    """Per figure: the two protocols' figures (`names`), their difference and its 95 % interval from a bootstrap over
    `places` (N,) labels, the unit resampled."""
    codes = pd.factorize(pd.Series(places))[0]
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]) for _ in range(boot)]
    rows = []
    for name, f in _FIGURES.items():
        diffs = np.array([f(e_exact[d]) - f(e_places[d]) for d in draws])
        low, high = np.quantile(diffs, [0.025, 0.975])
        rows.append({"figure": name, names[0]: f(e_exact), names[1]: f(e_places),
                     f"{names[0]} - {names[1]}": f(e_exact) - f(e_places),
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


def blocks(places: Run, blocked: Run, a: argparse.Namespace) -> None:
    """Places against spatial blocks of `a.block_km`: kNN-1, then `geoloc compare`'s verified default, paired."""
    frame = places.photo_table().frame
    units = fold_units(frame["group"].to_numpy(), frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy(), a.block_km)
    print(f"{places.root}: {len(frame)} photos, {frame['group'].nunique()} places, {len(set(units))} blocks of "
          f"{a.block_km:g} km")
    e_places, e_blocks = knn1_errors(places, frame["group"].to_numpy(), a.folds), knn1_errors(places, units, a.folds)
    print("kNN-1:\n" + markdown(pd.DataFrame(paired_rows(e_places, e_blocks, units, a.boot, a.seed,
                                                         ("places", "blocks")))))
    pd.set_option("display.width", 250)
    print(pd.concat([method_rows(places, "places"), method_rows(blocked, "blocks")]).to_string(
        index=False, float_format="%.3f"))
    answers = [pd.read_csv(r.compare_predictions)[["path", "error_km"]] for r in (places, blocked)]
    both = answers[0].merge(answers[1], on="path", suffixes=("_places", "_blocks"))
    unit_of = dict(zip(frame["path"], units))
    print("verified default:\n" + markdown(pd.DataFrame(paired_rows(
        both["error_km_places"].to_numpy(), both["error_km_blocks"].to_numpy(), both["path"].map(unit_of).to_numpy(),
        a.boot, a.seed, ("places", "blocks")))))


def markdown(frame: pd.DataFrame) -> str:
    """A table as Markdown, numbers to 3 decimals (for docs/results)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("knn", "compare", "blocks"))
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-km", type=float, default=0.0, help="blocks: the side BLOCKS_RUN was compared with")
    a = parser.parse_args(argv)
    if a.mode == "blocks":
        return blocks(Run(a.runs[0]), Run(a.runs[1]), a)
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
