"""Similar places: pick a photo (of this run, or a new one) or a region, and see how much every site of the territory
looks like it, with the closest places named."""

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from geoloc_core.base.images import thumbnail_uri, upright
from geoloc_core.base.places import region_places
from geoloc_core.ingest.photos import IMAGE_SUFFIXES
from geoloc_core.locate.similar import (
    HOW,
    Space,
    find_similar,
    photo_query,
    region_query,
    run_encoder,
    space_embeddings,
    spaces,
    upload_query,
)
from geoloc_core.runs.folders import Run, fingerprint
from views import figures
from views.common import basemap_online, photos, plain, run_with_graphs

SOURCES = ("a photo of this run", "a new photo", "a region")


@st.cache_resource(show_spinner=False, max_entries=4)
def _embeddings(run: Run, space: Space, version: str) -> np.ndarray:
    return space_embeddings(run, space)


@st.cache_resource(show_spinner="Loading the encoder ...", max_entries=2)
def _encoder(run: Run, version: str):
    return run_encoder(run)


@st.cache_data(show_spinner="Embedding the photo ...", max_entries=20)
def _upload_query(run: Run, space: Space, data: bytes, name: str, version: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return upload_query(path, _encoder(run, version), space)


@st.cache_data(show_spinner=False)
def _region_names(run: Run, labels: tuple, version: str) -> dict[int, str]:
    frame = photos(run)
    return region_places(np.array(labels), frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy())


@st.cache_data(show_spinner="Scoring every site ...", max_entries=50)
def _similar(run: Run, _emb: np.ndarray, _query, space: Space, how: str, top: int, version: str):
    found = find_similar(run.root, _query, space, how, top, emb=_emb)
    found.closest["photo"] = [thumbnail_uri(p) for p in found.closest["path"]]
    return found


st.header("Where else looks like this?")
run, graphs = run_with_graphs()
found_spaces = spaces(run)
space = st.sidebar.selectbox("Embeddings", found_spaces, format_func=lambda s: s.label,
                             help="The latest fine-tuning round's embeddings where the run has them (trained to tell "
                                  "its regions apart), else the pretrained ones that retrieval searches.")
how = st.sidebar.radio("A site's score", HOW,
                       format_func={"max": "its most alike photo", "mean": "the mean of its photos"}.get)
top = st.sidebar.slider("Closest places listed", 5, 30, 10)
version = fingerprint([run.photos, run.embeddings, run.sites, run.site_of_photo]
                      + ([space.ft.embeddings(space.round)] if space.ft else []))
emb = _embeddings(run, space, version)
source = st.radio("Look for places like", SOURCES, horizontal=True)

if source == SOURCES[0]:
    frame = photos(run)
    name = st.selectbox("Photo", frame["path"].tolist())
    index = int(np.flatnonzero(frame["path"].to_numpy() == name)[0])
    query = photo_query(emb, index, name)
    st.image(upright(str(run.photo_table().abs_paths()[index]), 360), caption=name)
elif source == SOURCES[1]:
    upload = st.file_uploader("Photo (JPEG, PNG, WebP, TIFF, HEIC)",
                              type=[s.lstrip(".") for s in sorted(IMAGE_SUFFIXES)])
    if upload is None:
        st.info("Drop a photo: every site of the run is scored against it.")
        st.stop()
    try:
        query = _upload_query(run, space, upload.getvalue(), Path(upload.name).name, version)
    except ValueError as exc:
        st.error(plain(str(exc)))
        st.stop()
    st.image(upload.getvalue(), caption=upload.name, width=360)
else:
    left, mid, right = st.columns(3)
    graph = left.selectbox("Graph", graphs, format_func=str.upper)
    iterations = run.iterations(graph)
    partition = iterations[mid.selectbox("Partition", list(iterations))]
    labels = partition.labels()["region"].to_numpy()
    names = _region_names(run, tuple(labels.tolist()), fingerprint([partition.csv]))
    region = right.selectbox("Region", sorted(names), format_func=lambda r: f"{r}: {names[r]}")
    query = region_query(emb, labels, region, f"region {region}")

found = _similar(run, emb, query, space, how, top, version + hashlib.sha1(query.vector.tobytes()).hexdigest())
sites = found.sites.merge(found.closest[["site", "photo"]].rename(columns={"photo": "thumb"}), on="site",
                          how="left").fillna({"thumb": ""})
st.pydeck_chart(figures.similarity_deck(sites, found.closest, online=basemap_online()), height=520)
st.caption(f"Embeddings: **{found.space}**. A site's score: the {'best' if how == 'max' else 'mean'} cosine of its "
           "photos to the query; colour by rank among the sites (yellow: the most alike). Ringed red: the query's own "
           "sites; numbered: the closest others.")
table = found.closest.assign(percentile=found.closest["percentile"] * 100)
st.dataframe(table[["rank", "place", "similarity", "percentile", "n_photos", "lat_deg", "lon_deg", "photo"]],
             hide_index=True, width="stretch",
             column_config={"photo": st.column_config.ImageColumn("best photo"),
                            "similarity": st.column_config.NumberColumn(format="%.3f"),
                            "percentile": st.column_config.NumberColumn("more alike than", format="%.1f %% of sites"),
                            "lat_deg": st.column_config.NumberColumn(format="%.5f"),
                            "lon_deg": st.column_config.NumberColumn(format="%.5f")})
