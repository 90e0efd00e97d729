"""Commands that measure a built run: `compare` (every locator), `levers` (one change at a time), `coverage`."""

from __future__ import annotations

import json
from pathlib import Path

from geoloc_core.cli.flags import Command, add_settings, settings
from geoloc_core.cli.tables import print_table, print_verdicts
from geoloc_core.config import (
    LARGER_INPUT,
    CompareConfig,
    CoverageConfig,
    CrossValConfig,
    FinetuneConfig,
    PredictConfig,
    PredictorConfig,
)
from geoloc_core.runs.folders import Run


def add_commands(command: Command) -> None:
    """compare, levers, coverage."""
    c = command("compare", _cmd_compare, "every locator on the held-out locations: km metrics and Recall@K")
    add_settings(c, CompareConfig, "compare")
    add_settings(c, CrossValConfig, "cv")
    add_settings(c, PredictorConfig, "predictor", only=("k", "sources", "n_words", "region_weight", "method"))
    add_settings(c, PredictConfig, "predict", only=("graph", "unfamiliar_below"))
    c = command("levers", _cmd_levers, "accuracy levers one at a time (fine-tuned backbone, ...), each paired against "
                "the default predictor over K folds of the run's locations")
    add_settings(c, CrossValConfig, "cv")
    add_settings(c, PredictorConfig, "predictor", only=("k", "sources", "region_weight"))
    add_settings(c, FinetuneConfig, "finetune", only=("graph", "rounds", "epochs", "unfrozen_blocks", "device"))
    c.add_argument("--larger-input", type=int, default=None, metavar="PX", help="the higher-resolution row's input "
                   f"side in px, as `geoloc run --image-size` sets it; 0: no such row (default: {LARGER_INPUT}, "
                   "where the run's encoder takes it and is embedded smaller)")
    c.add_argument("--rows", nargs="+", default=None, metavar="NAME", help="measure only these rows (names as the "
                   "table prints them, each quoted) besides the default; the table written holds just these")
    c.add_argument("--pair", nargs=2, metavar=("ROW", "REFERENCE"), default=None, help="instead of measuring: ROW "
                   "minus REFERENCE, two rows of the run's last lever table, paired over its per-photo errors (what a "
                   "combination adds over a part); only --folds and --fold-seed apply, and must be those it was "
                   "measured with")
    c.set_defaults(**{"cv.folds": 5})  # levers are only ever compared over folds
    c = command("coverage", _cmd_coverage, "photo density and location error per hexagon, as GeoJSON: where more "
                "photos would help")
    add_settings(c, CoverageConfig, "coverage")
    c.add_argument("--out", type=Path, default=None,
                   help="GeoJSON file to write (default: coverage.geojson in the run)")


def _cmd_compare(a) -> None:
    import pandas as pd

    from geoloc_core.analysis.compare import compare_methods
    from geoloc_core.analysis.crossval import write_tables
    from geoloc_core.evaluate.stats import with_intervals

    run, cv, predict_cfg = Run(a.run), settings(a, CrossValConfig, "cv"), settings(a, PredictConfig, "predict")
    result = compare_methods(a.run, settings(a, CompareConfig, "compare"), settings(a, PredictorConfig, "predictor"),
                             predict_cfg.graph, predict_cfg.unfamiliar_below, cv)
    folded = cv.folds > 1  # a single-split comparison has no verdicts or folds: no older ones may pass for its own
    write_tables({run.compare_table: pd.DataFrame(result.rows), run.compare_predictions: result.predictions,
                  run.compare_verdicts: pd.DataFrame(result.verdicts) if folded else None,
                  run.compare_folds: pd.DataFrame(result.folds) if folded else None})
    columns = ("method", "median_km", "acc@0.1km", "acc@1km", "acc@25km", "acc@200km", "acc@750km", "R@1", "R@5",
               "R@10", "radius_km@90", "within_radius", "unfamiliar")
    if not folded:
        print_table(result.rows, columns)
    else:
        print_table(with_intervals(pd.DataFrame(result.rows)).to_dict("records"), columns)
        unit = f"{cv.block_km:g} km blocks" if cv.block_km else "locations"
        print(f"\n{cv.folds}-fold over {unit}; [95 % interval over held-out {unit}]. Paired differences:")
        print_verdicts(result.verdicts)
        print("\nThe 90 % radius per fold (share of the fold's held-out photos within it, [95 % interval over its "
              "places]):")
        print_table(with_intervals(pd.DataFrame(result.folds)).to_dict("records"),
                    ("fold", "n_locations", "n_photos", "radius_km@90", "within_radius", "unfamiliar"))
    upstream = ["photos", "embeddings"]
    if not folded:  # the run's own split and regions
        upstream += ["split"] + ([f"regions:{predict_cfg.graph}"] if run.regions(predict_cfg.graph).exists() else [])
    else:  # each fold cuts its own regions, with the run's region settings
        upstream += ["config:regions"]
    sections = ((CompareConfig, "compare"), (PredictorConfig, "predictor"), (PredictConfig, "predict"),
                (CrossValConfig, "cv"))
    run.record_table(run.compare_files, upstream, [settings(a, c, s) for c, s in sections])
    print(f"-> {run.compare_table}, {run.compare_predictions} (the verified prediction per held-out photo)")


def _cmd_levers(a) -> None:
    import pandas as pd

    from geoloc_core.analysis.crossval import write_tables
    from geoloc_core.analysis.levers import larger_input, lever_variants, measure_levers, pair_rows, select_rows
    from geoloc_core.evaluate.stats import with_intervals

    run, cv, finetune = Run(a.run), settings(a, CrossValConfig, "cv"), settings(a, FinetuneConfig, "finetune")
    if a.pair:
        if (settings(a, PredictorConfig, "predictor") != PredictorConfig() or finetune != FinetuneConfig()
                or a.larger_input is not None or a.rows is not None):
            raise ValueError("--pair reads the saved errors and measures nothing: only --folds and --fold-seed apply")
        print_verdicts(pair_rows(a.run, *a.pair, cv))
        return
    size = larger_input(a.run, LARGER_INPUT if a.larger_input is None else a.larger_input)
    variants = lever_variants(settings(a, PredictorConfig, "predictor"), finetune.rounds, size)
    if a.rows is not None:
        variants = select_rows(variants, a.rows)
    result = measure_levers(a.run, variants, finetune, cv)
    write_tables({run.levers_table: pd.DataFrame(result.rows), run.levers_verdicts: pd.DataFrame(result.verdicts),
                  run.levers_errors: result.errors})
    run.record_table(run.levers_files, ["photos", "embeddings", "config:regions"], [variants, finetune, cv])
    print_table(with_intervals(pd.DataFrame(result.rows)).to_dict("records"),
                ("method", "median_km", "acc@0.1km", "acc@1km", "acc@25km", "acc@200km", "changes"))
    print(f"\n{cv.folds}-fold over locations; [95 % interval over held-out locations]. Each lever minus the default, "
          "paired:")
    print_verdicts(result.verdicts)
    print(f"-> {run.levers_table}, {run.levers_verdicts}, {run.levers_errors}")


def _cmd_coverage(a) -> None:
    from geoloc_core.analysis.coverage import coverage_geojson, run_coverage
    from geoloc_core.base.storage import write_bytes
    from geoloc_core.cli.build import stage

    cfg = settings(a, CoverageConfig, "coverage")
    out = a.out or Run(a.run).coverage_map
    with stage(a):  # the leave-location-out pass is kept in the run (a page that queued it follows the job)
        cells, projection, size_m = run_coverage(Run(a.run), cfg)
        write_bytes(out, json.dumps(coverage_geojson(cells, projection, size_m, cfg.errors)).encode())
    thin = cells[cells["n_photos"] > 0].sort_values("median_error_km", ascending=False).head(5)
    print(f"{len(cells)} hexagons of {size_m / 1000:.3g} km over {int(cells['n_photos'].sum())} photos; "
          f"median of the cells' median errors ({cfg.errors}): {cells['median_error_km'].median():.3g} km")
    print("highest median error:")
    print_table(thin.to_dict("records"),
                ("lat_deg", "lon_deg", "n_photos", "n_errors", "median_error_km", "p90_error_km"))
    print(f"-> {out}")
