"""Predict: upload photos (or pick held-out ones), see where they were probably taken, how sure that is,
and the photos that look alike."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from geoloc_core.base.images import upright
from geoloc_core.base.storage import spreadsheet_safe
from geoloc_core.config import DESCRIPTORS, GIS_FORMATS, TTAS, PredictConfig, PredictorConfig, TogetherConfig, help_of
from geoloc_core.ingest.photos import IMAGE_SUFFIXES
from geoloc_core.locate.explain import explain_prediction
from geoloc_core.locate.predict import predict, predictions_frame, predictions_geojson, region_names
from geoloc_core.locate.together import photo_groups
from geoloc_core.runs.folders import fingerprint
from geoloc_core.runs.provenance import Stale
from geoloc_core.share.gis import MIME, SUFFIX, layers_bytes, prediction_layers
from geoloc_core.share.maps import prediction_map, standalone_html
from geoloc_core.share.pictures import match_figure
from views import figures
from views.common import (
    basemap_online,
    current_run,
    current_table,
    held_out_photos,
    offer_predictor,
    plain,
    predictor,
    predictor_built,
    region_polygon,
    require,
    thumbnail,
)

st.header("Where was this photo taken?")
run = current_run()
if run is None:
    st.stop()
require(run, run.photos, run.embeddings, run.split)
if run.located.exists() and current_table(run, [run.located]):  # photos without GPS, located by `geoloc run`
    located = pd.read_csv(run.located, keep_default_na=False)
    with st.expander(f"This run's {len(located)} photos without GPS, located when it was built"):
        shown = ("path", "place", "lat_deg", "lon_deg", "radius_km", "coverage", "region", "unfamiliar", "error")
        st.dataframe(located[[c for c in shown if c in located]], hide_index=True, width="stretch")
descriptor = st.sidebar.selectbox("Descriptor", DESCRIPTORS if run.patches.exists() else DESCRIPTORS[:1])
rounds = run.finished_rounds("dt") if descriptor == "cls" else []
ft_round = st.sidebar.selectbox("Retrieve with", [0, *rounds],
                                format_func=lambda r: f"FT{r} backbone (DT)" if r else "pretrained backbone",
                                help=help_of(PredictorConfig, "ft_round"), disabled=not rounds)
use_head = st.sidebar.toggle("Region from the fine-tuned classifier", value=True,
                             help="The latest fine-tuning round's classifier, where this run has one (its blocks run "
                                  "once more per photo; retrieving with a fine-tuned backbone, that round's "
                                  "classifier, at no extra cost); off: the w/o region of the database photo nearest "
                                  "the prediction.")
explain = st.sidebar.toggle("Explain each match", value=True,
                            help="Under each neighbour, the patches it shares with the photo: lines join mutually "
                                 "nearest patches of the two, the most distinctive first (yellow: the closest). The "
                                 "photo's patch tokens come from its one forward pass; a neighbour's from the run's "
                                 "stored patch tokens (`geoloc embed --patches`), else one forward pass per neighbour, "
                                 "cached.")
together = st.sidebar.selectbox("Locate", ("none", "all", "time"),
                                help="Photos of one place located together get one answer from all their evidence: "
                                     "every photo scores every candidate any of them proposed. By time: each photo "
                                     "within the gap of the one before (EXIF time taken) is the same place; a photo "
                                     "without a time stays alone.",
                                format_func={"none": "each photo alone", "all": "all photos together (one place)",
                                             "time": "together when taken close in time (EXIF)"}.get)
gap_min = st.sidebar.number_input("Largest gap within a place (minutes)", 0.1, 1440.0, TogetherConfig.gap_min,
                                  disabled=together != "time", help=help_of(TogetherConfig, "gap_min"))
prior = st.sidebar.toggle("Region prior", value=bool(PredictorConfig.region_weight),
                          help=help_of(PredictorConfig, "region_weight"))
tta = "none"  # augmentations average the pretrained class token: offered only where the predictor retrieves with it
if not ft_round and descriptor == "cls":
    tta = st.sidebar.selectbox("Test-time augmentations", TTAS,
                               help=help_of(PredictorConfig, "tta") + " Its predictor (a job) embeds the run's photos "
                                                                      "once more per augmentation.",
                               format_func={"none": "the photo", "flip": "the photo and its mirror image",
                                            "crops": "the photo and its 4 corner crops"}.get)
uploads = st.file_uploader("Photos (JPEG, PNG, WebP, TIFF, HEIC)", type=[s.lstrip(".") for s in sorted(IMAGE_SUFFIXES)],
                           accept_multiple_files=True)
examples = held_out_photos(run)
picked = st.multiselect("... or try photos of this run's held-out locations (never in the predictor's database)",
                        examples["name"].tolist(), max_selections=10)
if not uploads and not picked:
    st.info("Drop one or more photos. A photo's own EXIF GPS, if it has one, is shown as the truth, never used to "
            "predict.")
    st.stop()

settings = PredictorConfig(descriptor=descriptor, ft_round=ft_round,
                           region_weight=PredictorConfig.region_weight if prior else 0.0, tta=tta)
predict_cfg = PredictConfig(predictor=settings, graph=run.labelled_graph() or PredictConfig.graph,
                            region_from="classifier" if use_head else "nearest")
try:  # building one takes minutes: a job's, never this page's (an input changed since the check: not built either)
    model = predictor(run, predict_cfg) if predictor_built(run, predict_cfg) else None
except (Stale, FileNotFoundError):
    model = None
if model is None:
    st.info("The predictor for these settings is not built yet (`geoloc predictor --database train` with them builds "
            "it; `geoloc run` builds the default one). Meanwhile, the settings it was built with answer at once.")
    offer_predictor(run, predict_cfg)
    st.stop()
with tempfile.TemporaryDirectory() as tmp, st.spinner(f"Locating {len(uploads) + len(picked)} photo(s) ..."):
    shown_as = {}
    for i, up in enumerate(uploads):
        path = Path(tmp) / f"{i:04d}_{Path(up.name).name}"
        path.write_bytes(up.getvalue())
        shown_as[str(path)] = up.name
    truth = {}
    for name in picked:
        row = examples[examples["name"] == name].iloc[0]
        shown_as[row["path"]] = name
        truth[row["path"]] = (float(row["lat_deg"]), float(row["lon_deg"]))
    paths = [Path(p) for p in shown_as]
    preds, failed = predict(paths, model, keep_tokens=explain,
                            groups=photo_groups(paths, TogetherConfig(together, gap_min)))
    explained = [{e.rank: e for e in explain_prediction(p, model, run.root)} if explain else {} for p in preds]
    for path, reason in failed.items():
        st.error(plain(f"{shown_as[path]}: {reason}"))
    images = [upright(p.path, 800) for p in preds]
    for p in preds:
        if p.path in truth:  # a held-out photo's recorded location is its truth
            p.true_lat_deg, p.true_lon_deg = truth[p.path]
        p.path = shown_as[p.path]



@st.fragment
def downloads(frame, preds) -> None:
    """A fragment: picking a GIS format reruns these buttons only, not the batch's predictions."""
    c1, c2, c3, c4, c5 = st.columns([1, 1, 2, 1, 2])
    c1.download_button("Predictions CSV", spreadsheet_safe(frame).to_csv(index=False), file_name="predictions.csv",
                       mime="text/csv")
    c2.download_button("GeoJSON", predictions_geojson(preds), file_name="predictions.geojson",
                       mime="application/geo+json")
    c3.download_button("Map of the batch (HTML, opens offline)",
                       lambda: standalone_html(prediction_map(frame, model.regions)),
                       file_name="predictions.html", mime="text/html")
    fmt = c4.selectbox("GIS format", GIS_FORMATS, label_visibility="collapsed")
    c5.download_button(f"As {fmt} (points, circles, neighbours)", lambda: layers_bytes(prediction_layers(frame), fmt),
                       file_name=f"predictions{SUFFIX[fmt]}", mime=MIME[fmt])


if preds:
    downloads(predictions_frame(preds), preds)
    named = region_names(model)
for p, image, why in zip(preds, images, explained):
    st.subheader(plain(p.path))
    photo, facts = st.columns([1, 2])
    photo.image(image, width="stretch")
    facts.metric("Predicted location", f"{p.lat_deg:.5f}, {p.lon_deg:.5f}")
    certainty = f", p = {p.region_prob:.2f}" if p.region_prob is not None else ""
    towns = f": {plain(named[p.region])}" if p.region in named else ""
    facts.write(f"**{plain(p.place)}** · within **{p.radius_km:.2f} km** for {p.coverage:.0%} of calibration photos · "
                f"region **{p.region}** ({model.region_source}{certainty}){towns}")
    if p.group:
        others = sum(q.group == p.group for q in preds) - 1
        facts.info(f"Located together with {others} other photo(s) of this batch as one place ({p.group}): one answer "
                   "for all, from every photo's evidence. The radius is calibrated on single photos, and the region's "
                   "p multiplies the photos' as if they were independent observations, so it is overconfident.")
    if p.unfamiliar:
        facts.warning(f"This photo looks unlike any photo of this run (familiarity {p.familiarity:.3f}: its best match "
                      f"is weaker than {1 - p.familiarity:.0%} of the run's own photos find at other places); the "
                      "location is a guess.")
    if p.region_agrees is False:
        facts.info("The classifier's region does not hold the predicted point: retrieval and the classifier disagree.")
    if p.error_km is not None:
        facts.success(f"The truth (EXIF GPS or the run's record) is {p.true_lat_deg:.5f}, {p.true_lon_deg:.5f}: "
                      f"the prediction is {p.error_km:.2f} km off.")
    polygon = region_polygon(model.regions, p.region, fingerprint([model.regions.geojson] if model.regions else []))
    st.pydeck_chart(figures.prediction_deck(p, polygon, online=basemap_online()), height=420)
    gallery = st.columns(5)
    for rank, (col, n) in enumerate(zip(gallery * 2, p.neighbours)):
        caption = plain(f"sim {n.similarity:.3f} · {n.dist_km:.1f} km · {n.place}")
        thumb = thumbnail(n.path)
        if thumb is None:
            col.warning(f"{Path(n.path).name} unreadable · {caption}")
            continue
        col.image(thumb, caption=caption, width="stretch")
        if rank in why:
            m = why[rank].matches
            col.image(match_figure(image, thumb, m, side=320, vertical=True), width="stretch",
                      caption=f"this photo ↕ neighbour: {m.n_mutual} mutual patch pairs, {len(m.similarity)} drawn")
    if why:
        from_run = next(iter(why.values())).tokens_from == "run"
        st.caption("Lines join patches that are each other's nearest among the two photos' DINOv2 patch tokens, the "
                   "most distinctive pairs (best cosine furthest ahead of the runner-up) first; yellow: the closest. "
                   f"Neighbours' tokens: {'stored in the run' if from_run else 'computed for these photos (cached)'}.")
