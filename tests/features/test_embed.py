import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DINOV2_WEIGHTS, TINY, jpeg_bytes, shared, textured
from geoloc_core.features.embed import EmbeddingCache, embed_images
from geoloc_core.features.encoders import build_vision_tower, load_encoder
from geoloc_core.ingest.photos import load_photos


def count_images(encoder) -> list[int]:
    seen = []
    encoder.model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    return seen


def test_tiny_encoder_gives_unit_embeddings_and_patch_tokens(exif_folder, tiny_checkpoint):
    table, _ = load_photos(exif_folder)
    enc = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu")
    out = embed_images(table.abs_paths(), enc, sha1s=table.frame["sha1"], batch_size=5, patches=True, progress=False)
    assert out.emb.shape == (24, 16) and out.emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.emb, axis=1), 1, atol=1e-5)
    assert out.patches.shape == (24, 16, 32) and out.patches.dtype == np.float16  # (32/8)^2 patches, width 32
    assert not out.failed
    single = embed_images(table.abs_paths()[:3], enc, batch_size=1, progress=False)  # batching changes nothing
    assert np.allclose(single.emb, out.emb[:3], atol=1e-5)


def test_cache_skips_unchanged_photos_and_redoes_changed_ones(exif_folder, tiny_checkpoint, tmp_path):
    table, _ = load_photos(exif_folder)
    paths, sha1s = table.abs_paths(), table.frame["sha1"].tolist()
    enc = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu")
    seen = count_images(enc)
    cache = EmbeddingCache.for_encoder(enc, root=tmp_path)
    first = embed_images(paths, enc, sha1s=sha1s, cache=cache, progress=False)
    assert sum(seen) == 24
    again = embed_images(paths, enc, sha1s=sha1s, cache=cache, progress=False)
    assert sum(seen) == 24 and np.array_equal(again.emb, first.emb)
    paths[0].write_bytes(jpeg_bytes(textured(999)))  # the photo changes on disk
    changed = embed_images(paths, enc, cache=cache, progress=False)  # sha1s=None: hashed from the bytes
    assert sum(seen) == 25
    assert not np.allclose(changed.emb[0], first.emb[0]) and np.array_equal(changed.emb[1:], first.emb[1:])


def test_an_undecodable_photo_is_reported_and_the_rest_embedded(exif_folder, tiny_checkpoint):
    paths = sorted(exif_folder.glob("*.jpg"))[:4]
    paths[2].write_bytes(b"garbage")
    enc = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu")
    out = embed_images(paths, enc, batch_size=2, progress=False)
    assert list(out.failed) == [2] and "not an image" in out.failed[2]
    assert out.ok.tolist() == [True, True, False, True]
    assert np.allclose(np.linalg.norm(out.emb[out.ok], axis=1), 1, atol=1e-5)


def test_torch_state_dict_checkpoints_load_too_and_bad_names_fail_clearly(tiny_checkpoint, tmp_path):
    torch.manual_seed(1)
    pt = tmp_path / "tiny.pt"
    torch.save({"state_dict": build_vision_tower(TINY).state_dict()}, pt)
    enc = load_encoder(TINY.name, checkpoint=pt, device="cpu")
    assert enc.key.startswith("tiny-vit-test-") and enc.key != load_encoder(TINY.name, checkpoint=tiny_checkpoint).key
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        load_encoder(TINY.name)
    with pytest.raises(KeyError, match="unknown encoder"):
        load_encoder("no-such-model")


@pytest.mark.slow  # builds an open_clip model
def test_open_clip_model_names_load_from_a_local_checkpoint(tmp_path, exif_folder):
    import open_clip

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    ckpt = tmp_path / "vitb32.pt"
    torch.save(model.state_dict(), ckpt)
    enc = load_encoder("ViT-B-32", checkpoint=ckpt, device="cpu")
    out = embed_images(sorted(exif_folder.glob("*.jpg"))[:2], enc, patches=True, progress=False)
    assert out.emb.shape == (2, 512) and out.patches.shape == (2, 49, 768)
    with pytest.raises(FileNotFoundError, match="offline"):
        load_encoder("ViT-B-32", pretrained="laion2b_s34b_b79k")  # not cached here: must not download


@pytest.mark.slow  # real DINOv2
def test_real_dinov2_sees_one_place_in_its_four_headings():
    assert DINOV2_WEIGHTS.is_file(), "run scripts/setup.sh first: it installs the DINOv2 weights"
    root = shared("croatia-streetview")
    manifest = pd.read_csv(root / "manifest.csv")
    locations = manifest["location_id"].drop_duplicates().iloc[:6]
    rows = manifest[manifest["location_id"].isin(locations)]
    enc = load_encoder(device="cpu")
    out = embed_images([root / p for p in rows["path"]], enc, progress=False)
    assert out.emb.shape == (24, 384)
    sim = out.emb @ out.emb.T
    same = rows["location_id"].to_numpy()[:, None] == rows["location_id"].to_numpy()[None]
    off_diag = ~np.eye(24, dtype=bool)
    assert sim[same & off_diag].mean() > sim[~same].mean() + 0.02
    assert sim[off_diag].max() < 0.999  # random or collapsed weights give ~1.0 everywhere


def test_image_size_resizes_the_position_grid(tiny_checkpoint, exif_folder):
    base = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu")
    big = load_encoder(TINY.name, checkpoint=tiny_checkpoint, device="cpu", image_size=64)
    assert big.image_size == 64 and big.key != base.key
    out = embed_images(sorted(exif_folder.glob("*.jpg"))[:2], big, patches=True, progress=False)
    assert out.emb.shape == (2, 16) and out.patches.shape == (2, 64, 32)  # (64/8)^2 patches
    with pytest.raises(ValueError, match="multiple of the patch size"):
        load_encoder(TINY.name, checkpoint=tiny_checkpoint, image_size=60)


@pytest.mark.slow  # a fresh interpreter
def test_a_self_describing_checkpoint_loads_in_a_process_that_never_registered_it(tiny_checkpoint):
    import subprocess
    import sys

    code = ("from geoloc_core.features.encoders import load_encoder; e = load_encoder('tiny-vit-test', "
            f"checkpoint={str(tiny_checkpoint)!r}, device='cpu'); print(e.image_size, e.model.proj.shape[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["32", "16"]
