"""Predict: upload photos, see where they were probably taken, how sure that is, and the photos that look alike."""

import tempfile
from pathlib import Path

import streamlit as st

from geoloc_core import viz
from geoloc_core.predict import predict, predictions_frame, predictions_geojson
from pages.common import predictor, region_polygon, run_dir

st.header("Where was this photo taken?")
run = run_dir()
if run is None:
    st.stop()
descriptor = st.sidebar.selectbox("Descriptor", ["cls", "gem", "vlad"] if (run / "patches.npy").exists() else ["cls"])
uploads = st.file_uploader("Photos (JPEG, PNG, WebP, TIFF)", type=["jpg", "jpeg", "png", "webp", "tif", "tiff"], accept_multiple_files=True)
if not uploads:
    st.info("Drop one or more photos. A photo's own EXIF GPS, if it has one, is shown as the truth, never used to predict.")
    st.stop()

model = predictor(str(run), descriptor)
with tempfile.TemporaryDirectory() as tmp, st.spinner(f"Locating {len(uploads)} photo(s) ..."):
    paths = []
    for i, up in enumerate(uploads):
        path = Path(tmp) / f"{i:04d}_{Path(up.name).name}"
        path.write_bytes(up.getvalue())
        paths.append(path)
    preds, failed = predict(paths, model)
    upload_of = {str(path): up for path, up in zip(paths, uploads)}
    for path, reason in failed.items():
        st.error(f"{upload_of[path].name}: {reason}")
    shown = [(p, upload_of[p.path]) for p in preds]
    for p, up in shown:
        p.path = up.name

if preds:
    frame = predictions_frame(preds)
    c1, c2 = st.columns(2)
    c1.download_button("Predictions CSV", frame.to_csv(index=False), file_name="predictions.csv", mime="text/csv")
    c2.download_button("Predictions GeoJSON", predictions_geojson(preds), file_name="predictions.geojson", mime="application/geo+json")
for p, up in shown:
    st.subheader(p.path)
    photo, facts = st.columns([1, 2])
    photo.image(up.getvalue(), width="stretch")
    facts.metric("Predicted location", f"{p.lat_deg:.5f}, {p.lon_deg:.5f}")
    facts.write(f"Within **{p.radius_km:.2f} km** for {p.coverage:.0%} of calibration photos · region **{p.region}**")
    if p.error_km is not None:
        facts.success(f"EXIF GPS says {p.true_lat_deg:.5f}, {p.true_lon_deg:.5f}: the prediction is {p.error_km:.2f} km off.")
    st.pydeck_chart(viz.prediction_deck(p, region_polygon(str(run), model.graph, p.region)), height=420)
    gallery = st.columns(5)
    for col, n in zip(gallery * 2, p.neighbours):
        col.image(n.path, caption=f"sim {n.similarity:.3f} · {n.dist_km:.1f} km", width="stretch")
