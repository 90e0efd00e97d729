"""What each region-analysis view costs on a built run, beside one Louvain cut of the same graph measured in the same
run.

    .venv/bin/python benchmarks/bench_region_views.py --run runs/croatia [--graph dt] [--seeds 10] [--repeat 3]

Each view is timed cold, as the page's cache meets it the first time (core function and figure), best of
`--repeat`: region signatures (typical / distinctive / adjacent pairs), confusion (held-out answers ->
matrix -> arcs), stability (one Louvain cut per seed), coverage (the kept leave-location-out answers -> hexagons ->
GeoJSON; beside it, the pass that `geoloc coverage`'s job runs to keep them). The reference is `SiteGraph.partition`
once: what `geoloc regions` pays per graph.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoloc_core.analysis.coverage import coverage_geojson, loo_answers, loo_errors, run_coverage  # noqa: E402
from geoloc_core.analysis.signatures import partition_signatures  # noqa: E402
from geoloc_core.analysis.stability import partition_stability  # noqa: E402
from geoloc_core.config import CoverageConfig  # noqa: E402
from geoloc_core.evaluate.metrics import confusion  # noqa: E402
from geoloc_core.runs.folders import Run  # noqa: E402
from views import figures  # noqa: E402


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/default"))
    p.add_argument("--graph", default="dt")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    run = Run(a.run)
    iterations = run.iterations(a.graph)
    emb, _ = run.read_embeddings()
    site_graph = run.site_graph(a.graph)
    cfg = run.pipeline_config().regions
    reference = best_ms(lambda: site_graph.partition(emb, cfg.negative, cfg.resolution, cfg.seed), a.repeat)
    print(f"{run.root}: {len(emb)} photos, {len(site_graph.train_sites)} training sites, {len(site_graph.edges)} "
          f"{a.graph.upper()} edges")
    print(f"reference: one Louvain cut (SiteGraph.partition) {reference:.1f} ms\n")

    rows = []
    for name, regions in iterations.items():
        summary, polygons = regions.read_summary(), regions.polygons()
        graded = run.partition_sources(regions).held_out

        def signatures_view(regions=regions):
            partition_signatures(run, a.graph, regions)

        def confusion_view(graded=graded, summary=summary, polygons=polygons):
            for path in graded.values():
                figures.confusion_deck(summary, confusion(pd.read_csv(path), len(summary)), polygons).to_json()

        def stability_view(regions=regions, polygons=polygons):
            figures.stability_deck(partition_stability(run, a.graph, regions, cfg.resolution,
                                                       tuple(range(a.seeds))).edges, polygons).to_json()

        sig = partition_signatures(run, a.graph, regions)
        rows += [{"iteration": name, "view": "signatures", "scorer": sig.method,
                  "ms": best_ms(signatures_view, a.repeat)},
                 {"iteration": name, "view": f"confusion ({len(graded)} graded)",
                  "ms": best_ms(confusion_view, a.repeat)},
                 {"iteration": name, "view": f"stability ({a.seeds} seeds)", "ms": best_ms(stability_view, a.repeat)}]

    def coverage_pass():  # `geoloc coverage`'s job: every photo located by the others, kept in the run
        loo_answers(run)

    def coverage_view():  # the page: the kept answers read, binned and drawn
        cells, projection, size_m = run_coverage(run, CoverageConfig(), build=False)
        figures.coverage_deck(coverage_geojson(cells, projection, size_m), "median_error_km").to_json()

    loo_errors(run)  # kept once, as the job would, so that the page's view reads them
    rows += [{"iteration": "(run)", "view": "coverage pass (the job's)", "ms": best_ms(coverage_pass, a.repeat)},
             {"iteration": "(run)", "view": "coverage (leave-location-out, read)",
              "ms": best_ms(coverage_view, a.repeat)}]
    table = pd.DataFrame(rows).fillna("")
    table["x one Louvain cut"] = (table["ms"] / reference).round(1)
    table["ms"] = table["ms"].round(1)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
