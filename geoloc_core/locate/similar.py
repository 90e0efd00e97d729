"""Find places like this: how much every site of the territory looks like a photo, or a region, and the closest ones.

"Where else in my municipality looks like this old town square?" The query is a vector in the space
the run's photos are embedded in: a photo of the run (its stored row), a new photo (one forward pass),
or a region (the normalised mean of its photos' rows, a prototype). Every photo is scored by cosine
against it, and every site (a distinct photo location) by the max or the mean over its photos.

The space is the fine-tuned one where the run has it: the latest fine-tuning round's embeddings
(`FinetuneRun.embeddings(r)`), whose features were trained to separate the graph's regions; else the
pretrained embeddings that retrieval searches. Every answer says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.base.places import nearest_places
from geoloc_core.config import GRAPHS
from geoloc_core.features.embed import embed_images
from geoloc_core.features.encoders import Encoder, load_encoder
from geoloc_core.learn.classifier import BackboneHead, load_region_head
from geoloc_core.runs.folders import FinetuneRun, Run

PRETRAINED = "pretrained (what retrieval searches)"
HOW = ("max", "mean")  # a site's score: its best photo's cosine, or its photos' mean


@dataclass(frozen=True)
class Space:
    """An embedding space of a run's photos: the pretrained one, or a fine-tuning round's."""

    label: str
    ft: FinetuneRun | None = None
    round: int | None = None


@dataclass
class Query:
    """What to look for: a unit vector in a space, and the run's photos it was made from (none for a new photo)."""

    vector: np.ndarray  # (D,) unit
    label: str
    photos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # rows of the run's photos


@dataclass
class SimilarPlaces:
    """Places like a query: every site scored, and the closest sites that are not the query's own."""
    sites: pd.DataFrame  # every site: site, lat_deg, lon_deg, similarity, percentile, n_photos, best_photo, path, query
    closest: pd.DataFrame  # the `top` best sites that hold none of the query's photos, with their place names
    space: str  # which embeddings were used
    how: str  # "max" or "mean" over a site's photos


def spaces(run: Run) -> list[Space]:
    """The run's embedding spaces, best first: each graph's latest fine-tuning round (where its embeddings cover the
    run's photos), then the pretrained one."""
    n = len(storage.read_npy(run.embeddings, mmap=True))
    found = []
    for graph in GRAPHS:
        latest = run.latest_round(graph)
        if (latest and latest[0].embeddings(latest[1]).exists()
                and len(storage.read_npy(latest[0].embeddings(latest[1]), mmap=True)) == n):
            ft, r = latest
            found.append(Space(f"FT{r} {graph.upper()} fine-tuned ({ft.root.relative_to(run.root)})", ft, r))
    return found + [Space(PRETRAINED)]


def space_embeddings(run: Run, space: Space) -> np.ndarray:
    """(N, D) unit embeddings of the run's photos in `space`."""
    return storage.read_npy(run.embeddings if space.ft is None else space.ft.embeddings(space.round))


def photo_query(emb: np.ndarray, photo: int, label: str) -> Query:
    """One of the run's photos as a query."""
    return Query(np.asarray(emb[photo], np.float32), label, np.array([photo]))


def region_query(emb: np.ndarray, labels: np.ndarray, region: int, label: str) -> Query:
    """The normalised mean of the region's photos: what they share, beyond any one of them."""
    members = np.flatnonzero(np.asarray(labels) == region)
    if not len(members):
        raise ValueError(f"region {region} has no photos")
    mean = np.asarray(emb[members], np.float32).mean(axis=0)
    return Query(mean / max(np.linalg.norm(mean), 1e-12), label, members)


def run_encoder(run: Run, device: str = "auto") -> Encoder:
    """The run's own encoder (its embed settings), to embed an uploaded photo as the run's photos were."""
    cfg = run.pipeline_config().embed
    return load_encoder(cfg.model, cfg.checkpoint, cfg.pretrained, device, cfg.image_size)


def upload_query(path: Path, encoder: Encoder, space: Space) -> Query:
    """A new photo in `space`: one forward pass, a fine-tuning round's blocks run inside it."""
    head = BackboneHead(load_region_head(space.ft, space.round, encoder)) if space.ft is not None else None
    out = embed_images([Path(path)], encoder, progress=False, head=head)
    if out.failed:
        raise ValueError(f"{path}: {out.failed[0]}")
    return Query((out.emb if head is None else head.split(out.head_out)[0])[0], Path(path).name)


def site_scores(emb: np.ndarray, site_of_photo: np.ndarray, query: np.ndarray, how: str = "max"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D) photo embeddings, (N,) site of each photo, (D,) query -> per site (S,): score, best photo, photo count."""
    if how not in HOW:
        raise ValueError(f"how={how!r}: choose from {HOW}")
    sims = np.asarray(emb, np.float32) @ np.asarray(query, np.float32)
    n_sites = int(site_of_photo.max()) + 1
    counts = np.bincount(site_of_photo, minlength=n_sites)
    order = np.lexsort((-sims, site_of_photo))  # by site, best photo first
    # every site holds a photo: sites are photo locations
    best = order[np.searchsorted(site_of_photo[order], np.arange(n_sites))]
    score = sims[best] if how == "max" else np.bincount(site_of_photo, weights=sims, minlength=n_sites) / counts
    return score, best, counts


def find_similar(run_dir: Path, query: Query, space: Space, how: str = "max", top: int = 10,
                 emb: np.ndarray | None = None
                 ) -> SimilarPlaces:
    """Every site of the run scored against `query`, and the `top` closest sites that hold none of its photos, named."""
    run = Run(run_dir)
    emb = space_embeddings(run, space) if emb is None else emb
    site_of_photo = storage.read_npy(run.site_of_photo)
    sites = run.read_sites()[["site", "lat_deg", "lon_deg"]]
    score, best, counts = site_scores(emb, site_of_photo, query.vector, how)
    paths = [str(p) for p in run.photo_table().abs_paths()]
    own = np.zeros(len(sites), bool)
    own[site_of_photo[query.photos]] = True
    sites = sites.assign(similarity=score[sites["site"]], n_photos=counts[sites["site"]],
                         best_photo=best[sites["site"]], query=own[sites["site"]])
    sites = sites.assign(path=[paths[i] for i in sites["best_photo"]], percentile=sites["similarity"].rank(pct=True))
    closest = sites[~sites["query"]].nlargest(top, "similarity").reset_index(drop=True)
    closest.insert(0, "rank", np.arange(1, len(closest) + 1))
    closest["place"] = nearest_places(closest["lat_deg"].to_numpy(), closest["lon_deg"].to_numpy())
    return SimilarPlaces(sites, closest, space.label, how)
