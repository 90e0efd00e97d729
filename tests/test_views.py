"""Flip test-time views: a photo and its mirror image through the encoder in one batch, their embeddings averaged."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from conftest import TINY, textured
from geoloc_core.config import PredictConfig, PredictorConfig
from geoloc_core.embed import embed_images
from geoloc_core.encoders import load_encoder
from geoloc_core.pipeline import view_embeddings
from geoloc_core.predict import predict
from geoloc_core.predictor import open_predictor
from geoloc_core.runs import Run


def _photos_and_mirrors(folder: Path, n: int = 4) -> tuple[list[Path], list[Path]]:
    """Lossless photos and their mirror images, so a mirror's pixels are exactly the photo's reversed."""
    folder.mkdir(parents=True, exist_ok=True)
    photos, mirrors = [], []
    for i in range(n):
        image = Image.fromarray(textured(i, size=(40, 56)).astype(np.uint8))
        image.save(folder / f"p{i}.png"), ImageOps.mirror(image).save(folder / f"m{i}.png")
        photos.append(folder / f"p{i}.png"), mirrors.append(folder / f"m{i}.png")
    return photos, mirrors


def test_flip_embedding_is_the_unit_mean_of_both_passes_and_blind_to_mirroring(tiny_checkpoint, tmp_path):
    enc = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu")
    photos, mirrors = _photos_and_mirrors(tmp_path)
    flip = embed_images(photos, enc, batch_size=3, progress=False, views=("photo", "mirror")).emb
    plain = embed_images(photos, enc, progress=False).emb
    mirror_pass = embed_images(photos, enc, progress=False, views=("mirror",)).emb
    mean = plain + mirror_pass
    assert np.allclose(flip, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    assert np.allclose(mirror_pass, embed_images(mirrors, enc, progress=False).emb, atol=1e-5)  # the mirror view is the mirror image
    assert not np.allclose(plain, mirror_pass, atol=1e-3)  # the tiny tower does see the difference: the average is not trivial
    of_mirrors = embed_images(mirrors, enc, batch_size=1, progress=False, views=("photo", "mirror")).emb
    assert np.allclose(flip, of_mirrors, atol=1e-5)


def test_a_flip_predictor_answers_a_photo_and_its_mirror_alike(tiny_run, tmp_path):
    run = Run(tiny_run)
    emb = view_embeddings(tiny_run, "flip")  # the mirror pass, made on demand and kept
    stamp = run.mirror_embeddings.stat().st_mtime_ns
    mean = run.read_embeddings()[0] + np.load(run.mirror_embeddings)
    assert np.allclose(emb, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    assert np.array_equal(view_embeddings(tiny_run, "flip"), emb) and run.mirror_embeddings.stat().st_mtime_ns == stamp  # reused
    predictor = open_predictor(tiny_run, PredictConfig(device="cpu", predictor=PredictorConfig(tta="flip")))
    photo = run.photo_table().abs_paths()[0]
    image = Image.open(photo).convert("RGB")
    image.save(tmp_path / "photo.png"), ImageOps.mirror(image).save(tmp_path / "mirror.png")
    (a, b), _ = predict([tmp_path / "photo.png", tmp_path / "mirror.png"], predictor)
    assert (a.lat_deg, a.lon_deg) == (b.lat_deg, b.lon_deg) and [n.path for n in a.neighbours] == [n.path for n in b.neighbours]
    assert a.neighbours[0].path == str(photo)  # the database is flip-averaged too: the photo finds itself first
