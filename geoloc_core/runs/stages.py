"""The stages over a run folder: ingest -> embed -> graph -> regions -> evaluate.

Each stage reads what the stage before it wrote into the run folder (`runs.Run` names every file),
writes its own artefacts atomically, records its config section in the run's config and appends
its figures to the run's metrics. The CLI calls these one by one (`geoloc ingest ...`) or all at
once (`geoloc run`); `summary_rows` reads the figures back without changing the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.base.geo import LocalProjection
from geoloc_core.config import EmbedConfig, EvalConfig, GraphConfig, IngestConfig, PipelineConfig, RegionConfig
from geoloc_core.evaluate.linear_probe import fit_linear_probe
from geoloc_core.evaluate.metrics import chance_metrics, held_out_answers, region_metrics
from geoloc_core.evaluate.splits import grouped_split
from geoloc_core.features.embed import TTA_AUGMENTATIONS, EmbeddingCache, embed_images, mean_of_augmentations
from geoloc_core.features.encoders import load_encoder
from geoloc_core.ingest.manifests import find_manifest
from geoloc_core.ingest.photos import IngestReport, PhotoTable, Rejection, load_photos
from geoloc_core.ingest.problems import nothing_accepted
from geoloc_core.ingest.tracks import open_tagger
from geoloc_core.regions.boundaries import ClipArea, clip_area
from geoloc_core.regions.graphs import build_graph, unique_sites
from geoloc_core.regions.partition import SiteGraph, region_polygons, region_table
from geoloc_core.runs.folders import RegionFiles, Run

log = logging.getLogger(__name__)


def as_path(value: str | Path | None) -> Path | None:
    """A path setting as a Path (None stays None): what a source may be where no server policy applies."""
    return None if value is None else Path(value)


def run_ingest(run_dir: Path, cfg: IngestConfig, source: Callable[[str | None], Path | None] = as_path) -> IngestReport:
    """Read the photos at `cfg.data`; `source` turns each path setting into the path read (the CLI passes the
    server's data-root check, `server.access.check_source`, which refuses a path outside the roots)."""
    run = Run(run_dir)
    tagger = open_tagger(str(source(cfg.gpx)), cfg.time_offset, cfg.gpx_max_gap) if cfg.gpx else None
    manifest = find_manifest(cfg.manifest, cfg.data) if cfg.manifest else None
    table, report = load_photos(source(cfg.data), source(manifest), workers=cfg.workers, tagger=tagger, cfg=cfg)
    if report.n_accepted == 0:  # nothing to build a run from: said as the step past it, before any file is written
        raise nothing_accepted(report, Path(cfg.data), manifest and Path(manifest), tagger is not None)
    run.write_photos(table, report)
    run.record_config("ingest", cfg)
    run.record("photos")
    run.append_metrics({"stage": "ingest", "n_candidates": report.n_candidates, "n_accepted": report.n_accepted,
                        "n_rejected": len(report.rejected), "n_to_locate": len(report.to_locate),
                        "n_places": report.places.n_places, "largest_place": report.places.largest_place,
                        "n_near_duplicates": len(report.near_duplicates)})
    return report


def run_embed(run_dir: Path, cfg: EmbedConfig) -> np.ndarray:
    """Embed the accepted photos; any that fail to decode now move to the rejected list."""
    run = Run(run_dir)
    table = run.photo_table()
    encoder = load_encoder(cfg.model, cfg.checkpoint, cfg.pretrained, cfg.device, cfg.image_size)
    if cfg.ray is not None:
        from geoloc_core.features.distributed import embed_with_ray

        result = embed_with_ray(table.abs_paths(), cfg, run.shards(encoder.key), cfg.ray)
    else:
        cache = EmbeddingCache.for_encoder(encoder)
        try:
            result = embed_images(table.abs_paths(), encoder, sha1s=table.frame["sha1"].tolist(),
                                  batch_size=cfg.batch_size, patches=cfg.patches, cache=cache, workers=cfg.workers)
        finally:
            cache.close()
    ok = result.ok
    if result.failed:
        _reject_more(run, table, {table.frame["path"].iat[i]: r for i, r in result.failed.items()})
        run.record("photos")  # fewer photos: everything cut from the old list reads as stale
    storage.write_npy(run.embeddings, result.emb[ok])
    if result.patches is not None:
        storage.write_npy(run.patches, result.patches[ok])
    elif run.patches.exists():
        run.patches.unlink()  # patch tokens of an earlier embedding no longer match these photos
    storage.write_json(run.embed_meta,
                       {"encoder": encoder.key, "dim": int(result.emb.shape[1]), "n_failed": len(result.failed)})
    run.record_config("embed", cfg)
    run.record("embeddings")
    run.append_metrics({"stage": "embed", "encoder": encoder.key, "n_embedded": int(ok.sum()),
                        "n_failed": len(result.failed)})
    return result.emb[ok]


def tta_embeddings(run_dir: Path, tta: str) -> np.ndarray:
    """(N, D) the run's photos embedded with the test-time augmentations `tta` (config.TTAS): the unit mean of each
    photo's embedding and its other augmentations' (its mirror image, its corner crops), as
    `embed_images(augmentations=...)` gives a query. Each augmentation's pass is made once with the run's encoder and
    kept (`Run.augmented_embeddings`) while its provenance record says it is of the run's embeddings (made again after
    the run is embedded again)."""
    run = Run(run_dir)
    emb = run.read_embeddings()[0]
    augmentations = TTA_AUGMENTATIONS[tta]
    stale = [a for a in augmentations if a != "photo" and not run.is_current(f"augmentation:{a}")]
    if stale:
        cfg = run.pipeline_config().embed
        encoder = load_encoder(cfg.model, cfg.checkpoint, cfg.pretrained, cfg.device, cfg.image_size)
        for augmentation in stale:
            result = embed_images(run.photo_table().abs_paths(), encoder, batch_size=cfg.batch_size,
                                  workers=cfg.workers, augmentations=(augmentation,))
            if result.failed:
                raise ValueError(f"{run.root}: {len(result.failed)} photos no longer decode; embed the run again")
            storage.write_npy(run.augmented_embeddings(augmentation), result.emb)
            run.record(f"augmentation:{augmentation}")
    passes = [emb if a == "photo" else storage.read_npy(run.augmented_embeddings(a)) for a in augmentations]
    return mean_of_augmentations(np.stack(passes, axis=1).reshape(-1, emb.shape[1]), len(augmentations))


def resized_embeddings(run_dir: Path, image_size: int) -> np.ndarray:
    """(N, D) the run's photos embedded at another input side, as `geoloc run --image-size` would embed them: what a
    higher resolution is worth, measured without a second run (the embedding cache is keyed by the size, so once)."""
    run = Run(run_dir)
    table, cfg = run.photo_table(), run.pipeline_config().embed
    encoder = load_encoder(cfg.model, cfg.checkpoint, cfg.pretrained, cfg.device, image_size)
    cache = EmbeddingCache.for_encoder(encoder)
    try:
        result = embed_images(table.abs_paths(), encoder, sha1s=table.frame["sha1"].tolist(), batch_size=cfg.batch_size,
                              cache=cache, workers=cfg.workers)
    finally:
        cache.close()
    if result.failed:
        raise ValueError(f"{run.root}: {len(result.failed)} photos no longer decode; embed the run again")
    return result.emb


def _reject_more(run: Run, table: PhotoTable, reasons: dict[str, str]) -> None:
    extra = pd.DataFrame([vars(Rejection(p, r)) for p, r in reasons.items()])
    storage.write_csv(run.rejected, pd.concat([run.read_rejected(), extra], ignore_index=True))
    storage.write_csv(run.photos, table.frame[~table.frame["path"].isin(reasons)])


def site_graph(xy_m: np.ndarray, is_test: np.ndarray, kind: str) -> SiteGraph:
    """(N, 2) photo positions (metres) and held-out flags -> the `kind` proximity graph over the training sites."""
    sites, site_of_photo = unique_sites(xy_m)
    train_sites = np.unique(site_of_photo[~is_test])
    return SiteGraph(site_of_photo=site_of_photo, site_xy_m=sites, train_sites=train_sites,
                     edges=train_sites[build_graph(kind, sites[train_sites])], is_test=is_test)


def fold_regions(table: PhotoTable, emb: np.ndarray, is_test: np.ndarray, kind: str, cfg: RegionConfig) -> np.ndarray:
    """(N,) the w/o region of every photo for a split that is not the run's (a fold): graph and Louvain in memory."""
    projection = LocalProjection.centred_on(table.lat_deg, table.lon_deg)
    graph = site_graph(projection.to_xy_m(table.lat_deg, table.lon_deg), is_test, kind)
    return graph.partition(emb, cfg.negative, cfg.resolution, cfg.seed)[0]


def run_graph(run_dir: Path, cfg: GraphConfig, is_test: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Split by location (or hold out `is_test`, a fold's), merge photos into sites, build each proximity graph over the
    training sites."""
    run = Run(run_dir)
    table = run.photo_table()
    projection = LocalProjection.centred_on(table.lat_deg, table.lon_deg)
    xy = projection.to_xy_m(table.lat_deg, table.lon_deg)
    if is_test is None:
        is_test = grouped_split(table.frame["group"].to_numpy(), cfg.test_frac, cfg.split_seed)
    sites, site_of_photo = unique_sites(xy)
    site_train = np.zeros(len(sites), bool)
    site_train[site_of_photo[~is_test]] = True
    site_lat, site_lon = projection.to_latlon(sites)
    storage.write_csv(run.sites, pd.DataFrame({"site": np.arange(len(sites)), "lat_deg": site_lat, "lon_deg": site_lon,
                                               "x_m": sites[:, 0], "y_m": sites[:, 1], "train": site_train}))
    storage.write_npy(run.site_of_photo, site_of_photo)
    run.write_split(projection, is_test)
    run.record_config("graph", cfg)
    run.record("split")  # every graph, region and fine-tuning of the split just replaced now reads as stale
    for kind in run.graphs():  # the probe's answers were for the held-out photos of the split just replaced
        run.held_out(kind).unlink(missing_ok=True)
    for kind in set(run.graphs()) - set(cfg.kinds):  # built on the split just replaced: gone, not stale
        run.graph(kind).unlink()
        run.regions(kind).remove()
    graphs = {}
    for kind in cfg.kinds:
        graph = site_graph(xy, is_test, kind)
        graphs[kind] = graph.edges  # in global site ids
        storage.write_npy(run.graph(kind), graphs[kind])
        run.record(f"graph:{kind}")
        run.append_metrics({"stage": "graph", "graph": kind, "n_sites": int(len(graph.train_sites)),
                            "n_edges": int(len(graph.edges))})
    return graphs


def write_regions(files: RegionFiles, table: PhotoTable, graph: SiteGraph, labels: np.ndarray,
                  projection: LocalProjection, clip: ClipArea | None = None) -> pd.DataFrame:
    """One partition's region per photo, per-region summary (counts, centroid, area after clipping) and polygons.

    Each photo keeps its region wherever it lies; `outside` marks those outside the clip area (at sea for
    the coarse land, outside a boundary), so a page or a report can name them. Returns the summary.
    """
    train = ~graph.is_test
    site_labels = np.zeros(len(graph.site_xy_m), np.int64)
    site_labels[graph.site_of_photo] = labels
    polygons = region_polygons(graph.site_xy_m[graph.train_sites], site_labels[graph.train_sites], projection,
                               clip=clip)
    summary = region_table(labels[train], table.lat_deg[train], table.lon_deg[train])
    summary = summary.merge(polygons[["region", "area_km2"]], on="region")
    outside = clip.outside(table.lat_deg, table.lon_deg) if clip is not None else np.zeros(len(labels), bool)
    files.write(pd.DataFrame({"path": table.frame["path"], "region": labels, "test": graph.is_test,
                              "outside": outside}), summary,
                polygons[["region", "geometry"]].merge(summary, on="region"))
    return summary


def cut_regions(run_dir: Path, cfg: RegionConfig, kinds: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Weight each graph (default: every graph the run has) by feature similarity,
    cut it with Louvain, label every photo."""
    run = Run(run_dir)
    table = run.photo_table()
    emb, _ = run.read_embeddings()
    projection, _ = run.read_split()
    clip = clip_area(cfg, table.lat_deg, table.lon_deg)
    outside = clip.outside(table.lat_deg, table.lon_deg) if clip is not None else np.zeros(len(table.frame), bool)
    n_outside = int(outside.sum())
    if n_outside:
        names = table.frame["path"][outside].tolist()
        log.warning("%d of %d photos lie outside the %s: they keep their region, their cells are clipped (all listed "
                    "in the regions CSV, column outside): "
                    "%s%s", n_outside, len(table.frame), clip.name, ", ".join(names[:10]),
                    f" and {n_outside - 10} more" if n_outside > 10 else "")
    results = {}
    graphs = {kind: run.site_graph(kind) for kind in kinds or run.graphs()}
    run.record_config("regions", cfg)  # from here, partitions cut with other settings read as stale
    for kind, graph in graphs.items():
        labels, partition = graph.partition(emb, cfg.negative, cfg.resolution, cfg.seed)
        # answers for the old regions: stale until `geoloc evaluate` grades the new ones
        run.held_out(kind).unlink(missing_ok=True)
        summary = write_regions(run.regions(kind), table, graph, labels, projection, clip)
        run.record(f"regions:{kind}")
        results[kind] = {"n_edges": int(len(graph.edges)), "n_regions": int(len(summary)),
                         "modularity": partition.modularity,
                         "area_km2": float(summary["area_km2"].sum()), "n_outside": n_outside}
        run.append_metrics({"stage": "regions", "graph": kind, **results[kind]})
    return results


def run_evaluate(run_dir: Path, cfg: EvalConfig, kinds: tuple[str, ...] | None = None) -> dict[str, dict]:
    """The "w/o" rows for each graph (default: every graph the run has): a linear probe on the frozen embeddings,
    graded on the held-out locations.

    Location error predicts the centroid of the predicted region; `oracle_median_km` is the error
    of the true region's centroid, the floor that the regions' size alone sets; `chance_acc` and
    `majority_acc` are what the regions' sizes alone score (`evaluate.chance_metrics`).
    """
    run = Run(run_dir)
    table = run.photo_table()
    emb, _ = run.read_embeddings()
    _, is_test = run.read_split()
    groups = table.frame["group"].to_numpy()
    results = {}
    run.record_config("eval", cfg)
    for kind in kinds or run.graphs():
        if not run.regions(kind).exists():
            raise FileNotFoundError(f"{run.root} has no {kind.upper()} regions yet: run `geoloc regions` first")
        labels = run.regions(kind).labels()["region"].to_numpy()
        probe = fit_linear_probe(emb[~is_test], labels[~is_test], groups[~is_test], seed=cfg.seed)
        pred = probe.predict(emb[is_test])
        storage.write_csv(run.held_out(kind), held_out_answers(pred, labels, table.lat_deg, table.lon_deg, is_test))
        run.record(f"held_out:{kind}")
        metrics = region_metrics(pred, labels, table.lat_deg, table.lon_deg, is_test)
        metrics["oracle_median_km"] = region_metrics(labels[is_test], labels, table.lat_deg, table.lon_deg,
                                                     is_test)["median_km"]
        metrics |= chance_metrics(labels, is_test)
        metrics |= {"n_regions": int(labels.max()) + 1, "n_test": int(is_test.sum()), "n_train": int((~is_test).sum())}
        results[kind] = metrics
        run.append_metrics({"stage": "evaluate", "graph": kind, "method": "w/o", **metrics})
    return results


def run_all(run_dir: Path, cfg: PipelineConfig, source: Callable[[str | None], Path | None] = as_path) -> list[dict]:
    """Every stage in order; returns one summary row per graph kind (`source`: as `run_ingest`)."""
    run_ingest(run_dir, cfg.ingest, source)
    run_embed(run_dir, cfg.embed)
    run_graph(run_dir, cfg.graph)
    regions = cut_regions(run_dir, cfg.regions, cfg.graph.kinds)
    evaluation = run_evaluate(run_dir, cfg.eval, cfg.graph.kinds)
    return [{"graph": k, **regions[k], **evaluation[k]} for k in cfg.graph.kinds]


def summary_rows(run_dir: Path) -> list[dict]:
    """The run's latest regions and w/o figures per graph, read from its metrics: shows a run, changes nothing. A
    graph's figures are left out once its regions (or their grading) no longer trace to the run as it is."""
    run = Run(run_dir)
    latest: dict[tuple[str, str], dict] = {}  # (graph, stage) -> the stage's last record
    for record in run.read_metrics():
        if record.get("stage") in ("regions", "evaluate") and record.get("graph") in run.graphs():
            latest[record["graph"], record["stage"]] = {k: v for k, v in record.items() if k not in ("time", "stage")}
    rows = []
    for graph in run.graphs():
        row = latest.get((graph, "regions"), {}) if run.is_current(f"regions:{graph}") else {}
        if row and run.is_current(f"held_out:{graph}"):
            row = row | latest.get((graph, "evaluate"), {})
        if row:
            rows.append({"graph": graph, **row})
    return rows
