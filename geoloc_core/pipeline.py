"""The stages over a run directory: ingest -> embed -> graph -> regions -> evaluate.

Each stage reads what the stage before it wrote into the run directory, writes its own artefacts
atomically, records its config section in `config.json` and appends its figures to
`metrics.jsonl`. The CLI calls these one by one (`geoloc ingest ...`) or all at once (`geoloc run`).

Artefacts:
    photos.csv, rejected.csv, ingest.json       accepted photos; rejected ones with the reason
    embeddings.npy (N, D) float32, embed.json   unit embeddings in photos.csv order
    patches.npy (N, P, Dp) float16              patch tokens, when asked for
    split.json, sites.csv, site_of_photo.npy    projection, held-out flags, distinct locations
    graph_{kind}.npy (E, 2) int64               proximity graph over the training sites
    regions_{kind}.csv                          region of every photo (held-out ones by nearest site)
    regions_{kind}_summary.csv, .geojson        per-region counts, centroids, areas, polygons
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import runs
from .classify import fit_linear_probe
from .config import EmbedConfig, EvalConfig, GraphConfig, IngestConfig, PipelineConfig, RegionConfig
from .embed import EmbeddingCache, embed_images, load_encoder
from .evaluate import region_metrics
from .geo import LocalProjection
from .graphs import build_graph, unique_sites
from .ingest import IngestReport, Rejection, load_photo_table, load_photos, save_photo_table
from .regions import SiteGraph, region_polygons, region_table
from .splits import grouped_split

log = logging.getLogger(__name__)


def record_config(run_dir: Path, section: str, cfg) -> None:
    """Merge one stage's config into config.json, so the file always says how every artefact was made."""
    path = Path(run_dir) / runs.CONFIG
    current = runs.read_json(path) if path.exists() else {}
    current[section] = dataclasses.asdict(cfg)
    runs.write_json(path, current)


def run_ingest(run_dir: Path, cfg: IngestConfig) -> IngestReport:
    table, report = load_photos(cfg.data, cfg.manifest, workers=cfg.workers)
    save_photo_table(run_dir, table, report)
    record_config(run_dir, "ingest", cfg)
    runs.append_metrics(run_dir, {"stage": "ingest", "n_candidates": report.n_candidates,
                                  "n_accepted": report.n_accepted, "n_rejected": len(report.rejected)})
    return report


def run_embed(run_dir: Path, cfg: EmbedConfig) -> np.ndarray:
    """Embed the accepted photos; any that fail to decode now move to rejected.csv."""
    table = load_photo_table(run_dir)
    encoder = load_encoder(cfg.model, cfg.checkpoint, cfg.pretrained, cfg.device, cfg.image_size)
    if cfg.ray is not None:
        from .distributed import embed_with_ray

        result = embed_with_ray(table.abs_paths(), cfg, Path(run_dir) / "shards" / encoder.key, cfg.ray)
    else:
        cache = EmbeddingCache.for_encoder(encoder)
        try:
            result = embed_images(table.abs_paths(), encoder, sha1s=table.frame["sha1"].tolist(), batch_size=cfg.batch_size,
                                  patches=cfg.patches, cache=cache, workers=cfg.workers)
        finally:
            cache.close()
    ok = result.ok
    if result.failed:
        _reject_more(run_dir, table, {table.frame["path"].iat[i]: r for i, r in result.failed.items()})
    runs.write_npy(Path(run_dir) / "embeddings.npy", result.emb[ok])
    if result.patches is not None:
        runs.write_npy(Path(run_dir) / "patches.npy", result.patches[ok])
    runs.write_json(Path(run_dir) / "embed.json", {"encoder": encoder.key, "dim": int(result.emb.shape[1]),
                                                   "n_failed": len(result.failed)})
    record_config(run_dir, "embed", cfg)
    runs.append_metrics(run_dir, {"stage": "embed", "encoder": encoder.key, "n_embedded": int(ok.sum()),
                                  "n_failed": len(result.failed)})
    return result.emb[ok]


def _reject_more(run_dir: Path, table, reasons: dict[str, str]) -> None:
    run_dir = Path(run_dir)
    rejected = pd.read_csv(run_dir / "rejected.csv", dtype=str, keep_default_na=False)
    extra = pd.DataFrame([vars(Rejection(p, r)) for p, r in reasons.items()])
    runs.write_csv(run_dir / "rejected.csv", pd.concat([rejected, extra], ignore_index=True))
    runs.write_csv(run_dir / "photos.csv", table.frame[~table.frame["path"].isin(reasons)])


def run_graph(run_dir: Path, cfg: GraphConfig) -> dict[str, np.ndarray]:
    """Split by location, merge photos into sites, build each proximity graph over the training sites."""
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    projection = LocalProjection.centred_on(table.lat_deg, table.lon_deg)
    xy = projection.to_xy_m(table.lat_deg, table.lon_deg)
    is_test = grouped_split(table.frame["group"].to_numpy(), cfg.test_frac, cfg.split_seed)
    sites, site_of_photo = unique_sites(xy)
    site_train = np.zeros(len(sites), bool)
    site_train[site_of_photo[~is_test]] = True
    train_sites = np.flatnonzero(site_train)
    site_lat, site_lon = projection.to_latlon(sites)
    runs.write_csv(run_dir / "sites.csv", pd.DataFrame({"site": np.arange(len(sites)), "lat_deg": site_lat, "lon_deg": site_lon,
                                                         "x_m": sites[:, 0], "y_m": sites[:, 1], "train": site_train}))
    runs.write_npy(run_dir / "site_of_photo.npy", site_of_photo)
    runs.write_json(run_dir / "split.json", {"projection": dataclasses.asdict(projection), "is_test": is_test.tolist()})
    graphs = {}
    for kind in cfg.kinds:
        local = build_graph(kind, sites[train_sites])
        graphs[kind] = train_sites[local]  # back to global site ids
        runs.write_npy(run_dir / f"graph_{kind}.npy", graphs[kind])
        runs.append_metrics(run_dir, {"stage": "graph", "graph": kind, "n_sites": int(len(train_sites)), "n_edges": int(len(local))})
    record_config(run_dir, "graph", cfg)
    return graphs


def load_split(run_dir: Path) -> tuple[LocalProjection, np.ndarray]:
    meta = runs.read_json(Path(run_dir) / "split.json")
    return LocalProjection(**meta["projection"]), np.asarray(meta["is_test"], bool)


def load_embeddings(run_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The run's unit photo embeddings, and its patch tokens (memory-mapped) if it kept them, else None."""
    patches = Path(run_dir) / "patches.npy"
    return runs.read_npy(Path(run_dir) / "embeddings.npy"), runs.read_npy(patches, mmap=True) if patches.exists() else None


def load_site_graph(run_dir: Path, kind: str) -> SiteGraph:
    """The graph stage's artefacts for one graph kind."""
    run_dir = Path(run_dir)
    sites = pd.read_csv(run_dir / "sites.csv")
    return SiteGraph(site_of_photo=runs.read_npy(run_dir / "site_of_photo.npy"), site_xy_m=sites[["x_m", "y_m"]].to_numpy(),
                     train_sites=np.flatnonzero(sites["train"].to_numpy()), edges=runs.read_npy(run_dir / f"graph_{kind}.npy"),
                     is_test=load_split(run_dir)[1])


def write_regions(out_dir: Path, name: str, table, graph: SiteGraph, labels: np.ndarray, projection: LocalProjection) -> pd.DataFrame:
    """`{name}.csv` (region per photo), `{name}_summary.csv` and `{name}.geojson`; returns the summary."""
    out_dir = Path(out_dir)
    train = ~graph.is_test
    runs.write_csv(out_dir / f"{name}.csv", pd.DataFrame({"path": table.frame["path"], "region": labels, "test": graph.is_test}))
    site_labels = np.zeros(len(graph.site_xy_m), np.int64)
    site_labels[graph.site_of_photo] = labels
    polygons = region_polygons(graph.site_xy_m[graph.train_sites], site_labels[graph.train_sites], projection)
    summary = region_table(labels[train], table.lat_deg[train], table.lon_deg[train])
    summary = summary.merge(polygons[["region", "area_km2"]], on="region")
    runs.write_csv(out_dir / f"{name}_summary.csv", summary)
    runs.write_bytes(out_dir / f"{name}.geojson", polygons[["region", "geometry"]].merge(summary, on="region").to_json().encode())
    return summary


def run_regions(run_dir: Path, cfg: RegionConfig, kinds: tuple[str, ...]) -> dict[str, dict]:
    """Weight each graph by feature similarity, cut it with Louvain, label every photo, draw the regions."""
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    emb = runs.read_npy(run_dir / "embeddings.npy")
    projection, _ = load_split(run_dir)
    results = {}
    for kind in kinds:
        graph = load_site_graph(run_dir, kind)
        labels, partition = graph.partition(emb, cfg.negative, cfg.resolution, cfg.seed)
        summary = write_regions(run_dir, f"regions_{kind}", table, graph, labels, projection)
        results[kind] = {"n_edges": int(len(graph.edges)), "n_regions": int(len(summary)), "modularity": partition.modularity}
        runs.append_metrics(run_dir, {"stage": "regions", "graph": kind, **results[kind]})
    record_config(run_dir, "regions", cfg)
    return results


def run_evaluate(run_dir: Path, cfg: EvalConfig, kinds: tuple[str, ...]) -> dict[str, dict]:
    """The "w/o" rows: a linear probe on the frozen embeddings, graded on the held-out locations.

    Location error predicts the centroid of the predicted region; `oracle_median_km` is the error
    of the true region's centroid, the floor that the regions' size alone sets; `majority_acc` is
    what always answering the largest training region scores.
    """
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    emb = runs.read_npy(run_dir / "embeddings.npy")
    _, is_test = load_split(run_dir)
    groups = table.frame["group"].to_numpy()
    results = {}
    for kind in kinds:
        labels = pd.read_csv(run_dir / f"regions_{kind}.csv")["region"].to_numpy()
        probe = fit_linear_probe(emb[~is_test], labels[~is_test], groups[~is_test], seed=cfg.seed)
        pred = probe.predict(emb[is_test])
        metrics = region_metrics(pred, labels, table.lat_deg, table.lon_deg, is_test)
        metrics["oracle_median_km"] = region_metrics(labels[is_test], labels, table.lat_deg, table.lon_deg, is_test)["median_km"]
        metrics["majority_acc"] = float(np.mean(labels[is_test] == np.bincount(labels[~is_test]).argmax()))
        metrics |= {"n_regions": int(labels.max()) + 1, "n_test": int(is_test.sum()), "n_train": int((~is_test).sum())}
        results[kind] = metrics
        runs.append_metrics(run_dir, {"stage": "evaluate", "graph": kind, "method": "w/o", **metrics})
    record_config(run_dir, "eval", cfg)
    return results


def run_all(run_dir: Path, cfg: PipelineConfig) -> list[dict]:
    """Every stage in order; returns one summary row per graph kind."""
    run_ingest(run_dir, cfg.ingest)
    run_embed(run_dir, cfg.embed)
    run_graph(run_dir, cfg.graph)
    regions = run_regions(run_dir, cfg.regions, cfg.graph.kinds)
    evaluation = run_evaluate(run_dir, cfg.eval, cfg.graph.kinds)
    return [{"graph": k, **regions[k], **evaluation[k]} for k in cfg.graph.kinds]
