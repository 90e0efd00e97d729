"""Commands that locate photos with a built run: `predict`, and `explain` (why each photo landed where it did)."""

from __future__ import annotations

from pathlib import Path

from geoloc_core.cli.flags import Command, add_settings, settings
from geoloc_core.config import GIS_FORMATS, ExplainConfig, PredictConfig, PredictorConfig, TogetherConfig


def add_commands(command: Command) -> None:
    """predictor, predict, explain."""
    c = command("predictor", _cmd_predictor, "build the predictor for these settings without locating a photo (the "
                "app's Predict page then opens it at once; a current one is left as it is)")
    add_settings(c, PredictorConfig, "predictor")
    add_settings(c, PredictConfig, "predict")
    c.add_argument("--database", choices=("all", "train"), default="all",
                   help="all: every photo of the run (as `geoloc predict` uses); train: without the held-out "
                        "locations (as the app uses, so that their photos are honest examples)")
    c = command("predict", _cmd_predict, "locate photos: retrieve, verify candidates; CSV + GeoJSON out")
    c.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    add_settings(c, PredictorConfig, "predictor")
    add_settings(c, PredictConfig, "predict")
    add_settings(c, TogetherConfig, "together")
    c.add_argument("--groups", type=Path, default=None, help="CSV with columns path and group: photos of one group are "
                   "one place, located together (instead of --together)")
    c.add_argument("--out", type=Path, default=Path("predictions"), help="folder for predictions.csv / .geojson")
    c.add_argument("--format", choices=GIS_FORMATS, default=None, help="also write predictions.{gpkg,kml,zip,geojson} "
                   "in this GIS format (predictions, uncertainty circles, neighbours)")
    c = command("explain", _cmd_explain, "why each photo was placed where it was: the patches it shares with each "
                "retrieved neighbour, as pictures and matches.csv")
    c.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    add_settings(c, PredictorConfig, "predictor")
    add_settings(c, PredictConfig, "predict")
    add_settings(c, ExplainConfig, "explain")
    c.add_argument("--out", type=Path, default=Path("explanations"),
                   help="folder for one subfolder of pictures per photo and matches.csv")


def _photo_files(paths: list[Path]) -> list[Path]:
    """Files as given, folders as the photos inside them."""
    from geoloc_core.ingest.photos import IMAGE_SUFFIXES

    return [f for p in paths
            for f in (sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p])]


def _cmd_predictor(a) -> None:
    from geoloc_core.cli.build import stage
    from geoloc_core.locate.store import open_predictor

    cfg = settings(a, PredictConfig, "predict", predictor=settings(a, PredictorConfig, "predictor"))
    with stage(a):
        predictor = open_predictor(a.run, cfg, database=a.database)
    print(f"predictor over {len(predictor.db)} photos ({a.database}): {predictor.coverage:.0%} radius "
          f"{predictor.radius_km:.3g} km, regions: {predictor.region_source}")


def _cmd_predict(a) -> None:
    from geoloc_core.base.storage import write_bytes, write_csv
    from geoloc_core.locate.predict import predict, predictions_frame, predictions_geojson, region_names
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
    named = region_names(predictor)
    csv, geojson = a.out / "predictions.csv", a.out / "predictions.geojson"
    write_csv(csv, predictions_frame(preds), spreadsheet=True)  # analysts open it in Excel: no formula runs
    write_bytes(geojson, predictions_geojson(preds).encode())
    for p in preds:
        truth = f", EXIF truth {p.error_km:.2f} km away" if p.error_km is not None else ""
        certainty = f" (p {p.region_prob:.2f})" if p.region_prob is not None else ""
        joint = f", located together as {p.group}" if p.group else ""
        print(f"{p.path}: {p.lat_deg:.5f}, {p.lon_deg:.5f} {p.place} (±{p.radius_km:.2f} km at {p.coverage:.0%}), "
              f"region {p.region}{certainty}{truth}{joint}")
        if p.region in named:
            print(f"  region {p.region}: {named[p.region]}")
        if p.unfamiliar:
            print(f"  warning: looks unlike any photo of this run (familiarity {p.familiarity:.3f}): "
                  "the location is a guess")
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

        layers = prediction_layers(predictions_frame(preds))
        print(f"-> {write_layers(layers, a.out / ('predictions' + SUFFIX[a.format]), a.format)}")


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
        tokens_from = explanations[0].tokens_from if explanations else "-"
        print(f"{p.path}: {p.lat_deg:.5f}, {p.lon_deg:.5f}; neighbours' patch tokens {tokens_from}")
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
            print(f"  {e.rank + 1:2d}. {e.neighbour.path} (sim {e.neighbour.similarity:.3f}, "
                  f"{e.neighbour.dist_km:.1f} km): {m.n_mutual} mutual patch pairs, the {len(m.similarity)} drawn at "
                  f"cosine {float(m.similarity.mean()):.3f} on average")
    for path, reason in failed.items():
        print(f"  could not read {path}: {reason}")
    csv = a.out / "matches.csv"
    write_csv(csv, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    print(f"{len(preds)} photos explained -> {a.out}/PHOTO/match_NN.png, heat_NN.png (NN: neighbour rank), {csv}")
