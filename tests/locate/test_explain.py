"""Explain a match: mutual nearest patches, where they lie on the photo, and the query encoded once."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import DINOV2_WEIGHTS, TINY, shared
from geoloc_core.cli import main
from geoloc_core.config import PredictConfig, PredictorConfig
from geoloc_core.features.embed import embed_images
from geoloc_core.features.encoders import load_encoder
from geoloc_core.locate.explain import explain_prediction, grid_side, mutual_matches, patch_centres
from geoloc_core.locate.predict import predict
from geoloc_core.locate.store import open_predictor
from geoloc_core.runs.folders import Run

CPU = PredictConfig(predictor=PredictorConfig(k=4), device="cpu")


def test_mutual_matches_find_a_shuffled_and_a_mirrored_grid():
    rng = np.random.default_rng(0)
    g = 6
    tokens = rng.normal(size=(g * g, 32)).astype(np.float32)
    perm = rng.permutation(g * g)
    m = mutual_matches(tokens, tokens[perm] + rng.normal(scale=0.05, size=tokens.shape), max_matches=g * g)
    assert m.n_mutual == g * g and (perm[m.match_patch] == m.query_patch).all()
    assert (np.diff(m.margin) <= 0).all() and (m.similarity > 0.9).all()
    mirrored = tokens.reshape(g, g, -1)[:, ::-1].reshape(g * g, -1)  # the photo flipped left to right
    m = mutual_matches(tokens, mirrored, max_matches=10)
    rows, cols = np.divmod(m.query_patch, g)
    assert len(m.query_patch) == 10 and (m.match_patch == rows * g + (g - 1 - cols)).all()
    assert m.query_heat.shape == m.match_heat.shape == (g * g,)


def test_a_uniform_patch_loses_to_a_distinctive_one():
    """Ten identical 'sky' patches match each other nearly as well as their partners: they are drawn last."""
    rng = np.random.default_rng(1)
    sky = np.tile(rng.normal(size=(1, 16)), (10, 1)) + rng.normal(scale=0.01, size=(10, 16))
    gable = rng.normal(size=(6, 16))
    a = np.vstack([sky, gable]).astype(np.float32)
    m = mutual_matches(a, a + rng.normal(scale=0.01, size=a.shape), max_matches=len(a))
    assert set(m.query_patch[:6]) == set(range(10, 16))


def test_patch_centres_cover_the_square_the_encoder_sees():
    wide = patch_centres(16, 400, 200)  # a 4 x 4 grid over the centred 200 x 200 square
    assert grid_side(16) == 4 and wide.shape == (16, 2)
    assert np.allclose(wide[0], [0.25 + 0.5 / 8, 1 / 8]) and np.allclose(wide[-1], [0.75 - 0.5 / 8, 7 / 8])
    # a tall photo: the same, turned
    assert np.allclose(patch_centres(16, 200, 400)[:, ::-1][[0, 5]], patch_centres(16, 400, 200)[[0, 5]])
    with pytest.raises(ValueError, match="square"):
        grid_side(15)


def _count_images(encoder) -> list[int]:
    """Images through the real encoder: every forward path (plain, or with a head) starts at the patch embedding."""
    seen: list[int] = []
    encoder.model.conv1.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    return seen


def test_the_query_is_encoded_once_and_a_database_photo_matches_itself_in_place(tiny_run):
    predictor = open_predictor(tiny_run, CPU)
    seen = _count_images(predictor.encoder)
    photo = Path(predictor.db["path"].iat[5])
    [pred], failed = predict([photo], predictor, keep_tokens=True)
    assert not failed and seen == [1] and pred.tokens.shape == (16, 32)  # the tiny ViT: 4 x 4 patches of width 32
    explanations = explain_prediction(pred, predictor, tiny_run)
    # the run kept no patch tokens: the 4 neighbours alone are embedded, the query is not again
    assert sum(seen) == 1 + 4
    assert [e.tokens_from for e in explanations] == ["computed"] * 4 and [e.rank for e in explanations] == [0, 1, 2, 3]
    itself = explanations[0]
    assert itself.neighbour.path == str(photo) and itself.neighbour.photo == predictor.db["photo"].iat[5]
    assert itself.matches.n_mutual == 16 and (itself.matches.query_patch == itself.matches.match_patch).all()
    assert np.allclose(itself.matches.similarity, 1, atol=1e-2)
    explain_prediction(pred, predictor, tiny_run)
    assert sum(seen) == 1 + 4  # asked again: the neighbours' tokens come from the embedding cache


def test_a_run_that_kept_its_patch_tokens_serves_the_neighbours_without_a_forward_pass(tiny_run, tiny_checkpoint):
    assert main(["embed", "--run", str(tiny_run), "--patches", "--model", TINY.name, "--checkpoint",
                 str(tiny_checkpoint), "--device", "cpu"]) == 0
    assert main(["regions", "--run", str(tiny_run)]) == 0  # embedded again: the regions weighed by it are cut again
    predictor = open_predictor(tiny_run, CPU)
    seen = _count_images(predictor.encoder)
    [pred], _ = predict([Path(predictor.db["path"].iat[2])], predictor, keep_tokens=True)
    explanations = explain_prediction(pred, predictor, tiny_run)
    assert seen == [1] and {e.tokens_from for e in explanations} == {"run"}
    stored = Run(tiny_run).read_embeddings()[1]
    first = explanations[0]
    assert (first.matches.query_patch == first.matches.match_patch).all()  # itself, from the stored tokens
    assert np.allclose(stored[first.neighbour.photo], pred.tokens, atol=1e-2)


def test_predict_without_keep_tokens_keeps_none_and_explain_says_so(tiny_run):
    predictor = open_predictor(tiny_run, CPU)
    [pred], _ = predict([Path(predictor.db["path"].iat[0])], predictor)
    assert pred.tokens is None
    with pytest.raises(ValueError, match="keep_tokens"):
        explain_prediction(pred, predictor, tiny_run)


def test_cli_explain_writes_a_picture_per_neighbour_and_the_matches(tiny_run, exif_folder, tmp_path, capsys):
    out = tmp_path / "why"
    photos = sorted(exif_folder.glob("*.jpg"))[:2]
    assert main(["explain", *map(str, photos), "--run", str(tiny_run), "--out", str(out), "--k", "3", "--max-matches",
                 "5", "--device", "cpu"]) == 0
    for photo in photos:
        pictures = sorted(p.name for p in (out / photo.stem).glob("*.png"))
        assert pictures == ["heat_01.png", "heat_02.png", "heat_03.png", "match_01.png", "match_02.png", "match_03.png"]
        assert (Image.open(out / photo.stem / "match_01.png").width > Image.open(out / photo.stem / "match_01.png")
                .height)
    frame = pd.read_csv(out / "matches.csv")
    assert set(frame["photo"]) == {str(p) for p in photos} and frame.groupby(["photo", "rank"]).size().max() <= 5
    assert frame[["query_x", "query_y", "match_x", "match_y"]].stack().between(0, 1).all()
    assert "mutual patch pairs" in capsys.readouterr().out


@pytest.fixture(scope="module")
def dinov2():
    assert DINOV2_WEIGHTS.is_file(), "run scripts/setup.sh first: it installs the DINOv2 weights"
    return load_encoder(device="cpu")


def _tokens(encoder, images: list[Image.Image], tmp_path: Path) -> np.ndarray:
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    return embed_images(paths, encoder, patches=True, progress=False).patches


@pytest.mark.slow  # real DINOv2
def test_real_dinov2_matches_a_flipped_and_a_shifted_copy_in_the_right_places(dinov2, tmp_path):
    root = shared("croatia-streetview")
    square = Image.open(root / pd.read_csv(root / "manifest.csv")["path"].iat[40]).convert("RGB")
    # a wide photo, 640 x 448: the encoder sees its middle 448 px
    photo = square.resize((640, 640)).crop((0, 96, 640, 544))
    w, h = photo.size
    # its left part, as high, so seen at the same scale: its middle square lies 84 px (3 patches) left
    box = (0, 0, 472, 448)
    original, flipped, shifted = _tokens(dinov2, [photo, photo.transpose(Image.FLIP_LEFT_RIGHT), photo.crop(box)],
                                         tmp_path)
    g = grid_side(len(original))
    centres = patch_centres(len(original), w, h)
    patch_px = min(w, h) / g

    # the most distinctive pairs (a uniform sky is matched by position)
    m = mutual_matches(original, flipped, max_matches=20)
    mirror = centres[m.match_patch] * [-1, 1] + [1, 0]  # where the flipped copy's patch lies on the original
    off = (np.abs(centres[m.query_patch] - mirror) * [w, h]).max(axis=1) / patch_px
    assert np.mean(off <= 1) >= 0.8  # within one patch of the mirrored place

    m = mutual_matches(shifted, original, max_matches=20)
    in_part = patch_centres(len(shifted), box[2], box[3])[m.query_patch] * [box[2], box[3]]  # pixels of the original
    off = np.abs(in_part - centres[m.match_patch] * [w, h]).max(axis=1) / patch_px
    assert np.mean(off < 0.5) >= 0.9  # the very patch: 3 columns over, where the shifted square puts it


def test_cli_explain_goes_on_when_a_neighbour_with_stored_tokens_has_moved_away(tiny_run, tiny_checkpoint, tmp_path,
                                                                                capsys):
    """Stored patch tokens serve a neighbour whose photo is gone: its matches are listed,
    its pictures skipped, no crash."""
    assert main(["embed", "--run", str(tiny_run), "--patches", "--model", TINY.name, "--checkpoint",
                 str(tiny_checkpoint), "--device", "cpu"]) == 0
    assert main(["regions", "--run", str(tiny_run)]) == 0  # embedded again: the regions weighed by it are cut again
    original = Path(open_predictor(tiny_run, CPU).db["path"].iat[2])
    query = tmp_path / "query.jpg"
    query.write_bytes(original.read_bytes())
    original.rename(original.with_suffix(".moved"))  # its best neighbour (itself) can no longer be read
    out = tmp_path / "why"
    assert main(["explain", str(query), "--run", str(tiny_run), "--out", str(out), "--k", "3", "--device", "cpu"]) == 0
    assert "cannot be read" in capsys.readouterr().out
    assert ("match_01.png" not in {p.name for p in (out / "query").glob("*.png")} and (out / "query" / "match_02.png")
            .exists())
    assert str(original) in set(pd.read_csv(out / "matches.csv")["neighbour"])
