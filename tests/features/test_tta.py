"""Test-time augmentations: a photo and its mirror image (flip), or its four corner crops (crops), through the encoder
in one batch, their embeddings averaged; and a run's photos embedded at another input size."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import TINY, textured
from geoloc_core.config import PredictConfig, PredictorConfig
from geoloc_core.features import embed
from geoloc_core.features.embed import AUGMENTATIONS, TTA_AUGMENTATIONS, embed_images
from geoloc_core.features.encoders import load_encoder
from geoloc_core.locate.predict import predict
from geoloc_core.locate.store import open_predictor
from geoloc_core.runs.folders import Run
from geoloc_core.runs.stages import resized_embeddings, tta_embeddings


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
    flip = embed_images(photos, enc, batch_size=3, progress=False, augmentations=("photo", "mirror")).emb
    plain = embed_images(photos, enc, progress=False).emb
    mirror_pass = embed_images(photos, enc, progress=False, augmentations=("mirror",)).emb
    mean = plain + mirror_pass
    assert np.allclose(flip, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    # the mirror augmentation is the mirror image
    assert np.allclose(mirror_pass, embed_images(mirrors, enc, progress=False).emb, atol=1e-5)
    # the tiny tower does see the difference: the average is not trivial
    assert not np.allclose(plain, mirror_pass, atol=1e-3)
    of_mirrors = embed_images(mirrors, enc, batch_size=1, progress=False, augmentations=("photo", "mirror")).emb
    assert np.allclose(flip, of_mirrors, atol=1e-5)


def test_a_flip_predictor_answers_a_photo_and_its_mirror_alike(tiny_run, tmp_path):
    run = Run(tiny_run)
    emb = tta_embeddings(tiny_run, "flip")  # the mirror pass, made on demand and kept
    stamp = run.augmented_embeddings("mirror").stat().st_mtime_ns
    mean = run.read_embeddings()[0] + np.load(run.augmented_embeddings("mirror"))
    assert np.allclose(emb, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    # reused
    assert (np.array_equal(tta_embeddings(tiny_run, "flip"), emb)
            and run.augmented_embeddings("mirror").stat().st_mtime_ns == stamp)
    predictor = open_predictor(tiny_run, PredictConfig(device="cpu", predictor=PredictorConfig(tta="flip")))
    photo = run.photo_table().abs_paths()[0]
    image = Image.open(photo).convert("RGB")
    image.save(tmp_path / "photo.png"), ImageOps.mirror(image).save(tmp_path / "mirror.png")
    (a, b), _ = predict([tmp_path / "photo.png", tmp_path / "mirror.png"], predictor)
    assert (a.lat_deg,
            a.lon_deg) == (b.lat_deg, b.lon_deg) and [n.path for n in a.neighbours] == [n.path for n in b.neighbours]
    assert a.neighbours[0].path == str(photo)  # the database is flip-averaged too: the photo finds itself first


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_corner_crops_cover_the_photo_and_are_averaged_with_it(tiny_checkpoint, tmp_path, monkeypatch):
    image = Image.fromarray(textured(0, size=(40, 56)).astype(np.uint8))  # 56 wide, 40 high
    pixels = np.asarray(image)
    for name, (rows, cols) in {"top_left": (slice(0, 30), slice(0, 42)), "top_right": (slice(0, 30), slice(14, 56)),
                               "bottom_left": (slice(10, 40), slice(0, 42)),
                               "bottom_right": (slice(10, 40), slice(14, 56))}.items():
        # 3/4 of each side, in its corner
        assert np.array_equal(np.asarray(AUGMENTATIONS[f"crop_{name}"](image)), pixels[rows, cols]), name
    enc = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu")
    photos = []
    for i in range(3):  # JPEGs 320 px high: the tiny tower's 32 px input is decoded at 1/8, a crop's 43 px at 1/4
        photos.append(tmp_path / f"p{i}.jpg")
        Image.fromarray(textured(i, size=(320, 400)).astype(np.uint8)).save(photos[-1], quality=95)
    sides = []
    real = embed.decode_image
    monkeypatch.setattr(embed, "decode_image",
                        lambda data, min_side=None: sides.append(min_side) or real(data, min_side))
    crops = embed_images(photos, enc, batch_size=2, progress=False, augmentations=TTA_AUGMENTATIONS["crops"]).emb
    # a crop decoded large enough to keep its detail
    assert sorted(set(sides)) == [enc.image_size, round(enc.image_size / 0.75)]
    # each augmentation alone, as the database's passes are made (the photo itself: the run's own embedding pass)
    passes = [embed_images(photos, enc, progress=False, augmentations=(a,)).emb for a in TTA_AUGMENTATIONS["crops"]]
    assert np.allclose(crops, _unit(sum(passes)), atol=1e-5)
    assert not np.allclose(crops, passes[0], atol=1e-3)


def test_a_crops_predictor_keeps_each_augmentations_pass_and_finds_a_database_photo_itself(tiny_run, monkeypatch):
    from geoloc_core.locate import store as predictor_store_module

    run = Run(tiny_run)
    builds = []
    real = predictor_store_module.build_predictor
    monkeypatch.setattr(predictor_store_module, "build_predictor", lambda *a, **k: builds.append(1) or real(*a, **k))
    cfg = PredictConfig(device="cpu", predictor=PredictorConfig(tta="crops"))
    for _ in range(2):  # the augmentations' passes are made with the first: the second opens what the first saved
        predictor = open_predictor(tiny_run, cfg)
    assert len(builds) == 1
    emb = tta_embeddings(tiny_run, "crops")
    passes = [run.read_embeddings()[0]] + [np.load(run.augmented_embeddings(a)) for a in TTA_AUGMENTATIONS["crops"][1:]]
    assert np.allclose(emb, _unit(sum(passes)), atol=1e-6)
    photo = run.photo_table().abs_paths()[3]
    [pred], _ = predict([photo], predictor)
    # same 5 augmentations
    assert pred.neighbours[0].path == str(photo) and pred.neighbours[0].similarity == pytest.approx(1.0, abs=1e-4)


def test_a_runs_photos_at_another_input_size_are_what_that_encoder_gives(tiny_run, tiny_checkpoint):
    run = Run(tiny_run)
    larger = resized_embeddings(tiny_run, 40)  # 5 x 5 patches of 8 px instead of the tiny tower's 4 x 4
    enc = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu", image_size=40)
    assert enc.image_size == 40
    assert np.allclose(larger, embed_images(run.photo_table().abs_paths(), enc, progress=False).emb, atol=1e-5)
    assert not np.allclose(larger, run.read_embeddings()[0], atol=1e-3)
