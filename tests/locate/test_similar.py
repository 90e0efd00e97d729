"""Find places like this: per-site scores, the query's own sites set apart, and the fine-tuned space used
where the run has one."""

import json
from pathlib import Path

import numpy as np
import pytest

from geoloc_core.base import storage
from geoloc_core.config import FinetuneConfig
from geoloc_core.learn.finetune import finetune_rounds
from geoloc_core.locate.similar import (
    PRETRAINED,
    find_similar,
    photo_query,
    region_query,
    run_encoder,
    site_scores,
    space_embeddings,
    spaces,
    upload_query,
)
from geoloc_core.runs.folders import Run
from views import figures


def test_site_scores_take_the_best_or_the_mean_photo_of_each_site():
    emb = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]], np.float32)
    site_of_photo = np.array([0, 0, 1, 2])
    score, best, counts = site_scores(emb, site_of_photo, np.array([1, 0], np.float32), "max")
    assert np.allclose(score, [1, 0.6, -1]) and best.tolist() == [0, 2, 3] and counts.tolist() == [2, 1, 1]
    score, _, _ = site_scores(emb, site_of_photo, np.array([1, 0], np.float32), "mean")
    assert np.allclose(score, [0.5, 0.6, -1])
    with pytest.raises(ValueError, match="choose from"):
        site_scores(emb, site_of_photo, emb[0], "median")


def test_a_run_photo_finds_other_sites_and_sets_its_own_apart(tiny_run):
    run = Run(tiny_run)
    [space] = spaces(run)
    assert space.label == PRETRAINED
    emb = space_embeddings(run, space)
    found = find_similar(tiny_run, photo_query(emb, 4, "photo 4"), space, top=5)
    site_of_photo = storage.read_npy(run.site_of_photo)
    own = found.sites[found.sites["query"]]
    assert own["site"].tolist() == [site_of_photo[4]] and own["similarity"].iat[0] == pytest.approx(1, abs=1e-5)
    assert len(found.sites) == len(run.read_sites()) and found.sites["percentile"].between(0, 1).all()
    closest = found.closest
    assert closest["rank"].tolist() == [1, 2, 3, 4, 5] and site_of_photo[4] not in closest["site"].tolist()
    others = emb[site_of_photo != site_of_photo[4]] @ emb[4]
    assert closest["similarity"].iat[0] == pytest.approx(others.max(), abs=1e-5)  # the best other photo's site leads
    assert (closest["similarity"].is_monotonic_decreasing
            and all(isinstance(p, str) and "(" in p for p in closest["place"]))
    assert all(Path(p).is_file() for p in closest["path"]) and found.space == PRETRAINED and found.how == "max"
    deck = json.loads(figures.similarity_deck(found.sites, closest).to_json())
    assert [layer["@@type"] for layer in deck["layers"]][-4:] == ["ScatterplotLayer", "ScatterplotLayer",
                                                                  "ScatterplotLayer", "TextLayer"]


def test_a_region_query_sets_apart_every_site_of_the_region(tiny_run):
    run = Run(tiny_run)
    labels = run.regions("dt").labels()["region"].to_numpy()
    emb = space_embeddings(run, spaces(run)[-1])
    query = region_query(emb, labels, 0, "region 0")
    assert (np.linalg.norm(query.vector) == pytest.approx(1) and sorted(query.photos)
            == list(np.flatnonzero(labels == 0)))
    found = find_similar(tiny_run, query, spaces(run)[-1], how="mean", top=3)
    site_of_photo = storage.read_npy(run.site_of_photo)
    assert set(found.sites.loc[found.sites["query"], "site"]) == set(site_of_photo[labels == 0])
    assert not set(found.closest["site"]) & set(site_of_photo[labels == 0])
    with pytest.raises(ValueError, match="no photos"):
        region_query(emb, labels, 99, "none")


def test_the_fine_tuned_space_comes_first_and_a_new_photo_lands_where_the_run_put_it(tiny_run):
    run = Run(tiny_run)
    list(finetune_rounds(tiny_run, FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")))
    tuned, pretrained = spaces(run)
    assert tuned.label.startswith("FT1 DT fine-tuned") and tuned.round == 1 and pretrained.label == PRETRAINED
    encoder = run_encoder(run, "cpu")
    photo = run.photo_table().abs_paths()[7]
    for space in (tuned, pretrained):  # the photo embedded anew, as an upload, is its stored row in that space
        assert np.allclose(upload_query(photo, encoder, space).vector, space_embeddings(run, space)[7],
                           atol=2e-2), space.label
    assert not np.allclose(space_embeddings(run, tuned), space_embeddings(run, pretrained), atol=1e-2)
    broken = Path(tiny_run) / "broken.jpg"
    broken.write_bytes(b"not a photo")
    with pytest.raises(ValueError, match="broken.jpg"):
        upload_query(broken, encoder, tuned)
