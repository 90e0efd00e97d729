"""The space a predictor retrieves in, and database vectors that carry their neighbourhood
(`PredictorConfig.retrieval`, `.propagate`).

- `retrieval_vectors`: "image" is the descriptor itself (CLS, GeM or VLAD); "geo" the verifier's image codes, the
  image tower trained contrastively against GPS (`locators.GpsVerifier`), so two photos are close when the verifier
  places them close; "both" the two side by side, each scaled by 1/sqrt(2), so the cosine is the mean of the two
  cosines. Queries and the database go through the same function with the same verifier: one space.
- `propagate_over_sites`: each database vector mixed with the mean of its Delaunay-neighbour sites' vectors,
  normalize((1 - a) v + a c). The parameter-free approximation of UrbanGraphEmbeddings (UGE), which *trains* an
  encoder to align a street-view photo with its spatial graph's neighbourhood: one step of mean feature propagation
  (GraphSAGE's mean aggregator, no weights) over the proximity graph of the database's sites. Only the database is
  propagated: a query has no position in the graph, so it stays plain and meets photos that also show what their
  surroundings look like. A site with no neighbour keeps its own vectors.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from geoloc_core.base.geo import LocalProjection
from geoloc_core.config import RETRIEVALS
from geoloc_core.features.descriptors import unit_vectors
from geoloc_core.locate.locators import GpsVerifier
from geoloc_core.regions.graphs import build_graph, unique_sites
from geoloc_core.regions.partition import site_embeddings

PROPAGATION_GRAPH = "dt"  # the densest of the three graphs (RNG ⊆ GG ⊆ DT): every site's natural neighbours


def retrieval_vectors(kind: str, desc: np.ndarray, emb: np.ndarray, verifier: GpsVerifier | None) -> np.ndarray:
    """(M, D) unit descriptors and (M, Demb) unit CLS embeddings -> (M, D') unit vectors of the
    retrieval space `kind`."""
    if kind not in RETRIEVALS:
        raise ValueError(f"unknown retrieval {kind!r}; choose from {RETRIEVALS}")
    if kind == "image":
        return np.ascontiguousarray(desc, dtype=np.float32)
    if verifier is None:
        raise ValueError(f"retrieval {kind!r} uses the GPS verifier's image codes: keep the verifier on (--verify)")
    codes = verifier.image_codes_np(emb)
    if kind == "geo":
        return np.ascontiguousarray(codes, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate([desc, codes], axis=1) / np.sqrt(2), dtype=np.float32)


def site_neighbours(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, sparse.csr_matrix]:
    """(N,) photo coordinates -> (site of each photo (N,), (S, S) symmetric 0/1 adjacency of the sites' Delaunay
    graph)."""
    sites, site_of_photo = unique_sites(LocalProjection.centred_on(lat_deg, lon_deg).to_xy_m(lat_deg, lon_deg))
    edges = build_graph(PROPAGATION_GRAPH, sites) if len(sites) > 1 else np.empty((0, 2), np.int64)
    ends = np.concatenate([edges, edges[:, ::-1]])
    adjacency = sparse.csr_matrix((np.ones(len(ends), np.float32), (ends[:, 0], ends[:, 1])),
                                  shape=(len(sites), len(sites)))
    return site_of_photo, adjacency


def propagate_over_sites(vectors: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, share: float) -> np.ndarray:
    """(N, D) unit database vectors -> (N, D) unit normalize((1 - share) v + share c), c the mean of the unit mean
    vectors of the photo's Delaunay-neighbour sites (its own site's other photos are not context: they are the same
    place)."""
    if share == 0:
        return vectors
    site_of_photo, adjacency = site_neighbours(lat_deg, lon_deg)
    site_vectors = site_embeddings(vectors, site_of_photo, adjacency.shape[0])
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    context = (adjacency @ site_vectors) / np.maximum(degree, 1)[:, None]
    isolated = degree[site_of_photo] == 0
    context = np.where(isolated[:, None], vectors, context[site_of_photo])
    return unit_vectors((1 - share) * vectors + share * context)
