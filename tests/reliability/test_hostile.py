"""Hostile files: nothing a user or an upload hands us is unpickled or executed, and the limits hold."""

import pickle
import tomllib
from pathlib import Path

import pytest

from conftest import TINY
from corpus import png_bomb
from geoloc_core.base.images import MAX_PIXELS, ImageDecodeError, decode_image
from geoloc_core.config import FinetuneConfig
from geoloc_core.features.encoders import load_encoder
from geoloc_core.learn import finetune as ft
from geoloc_core.locate.index import load_index
from geoloc_core.locate.locators import load_locator

pytestmark = pytest.mark.slow  # minutes: real processes, kill loops, many sessions

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this would run `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _evil(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    return path


def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path, tiny_checkpoint):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError):
        load_encoder(TINY.name, _evil(tmp_path / "evil.pt", marker), device="cpu")
    assert not marker.exists()


def test_a_tampered_training_checkpoint_is_refused_on_resume(tiny_run, tmp_path):
    cfg = FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
    out = tmp_path / "ft"
    list(ft.finetune_rounds(tiny_run, cfg, out_dir=out))
    marker = tmp_path / "pwned"
    _evil(out / "checkpoints" / "last.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        list(ft.finetune_rounds(tiny_run, cfg, out_dir=out))
    assert not marker.exists()


def test_indexes_and_locators_load_without_pickle(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(RuntimeError):  # faiss's own format: a pickle is just bad bytes to it
        load_index(_evil(tmp_path / "index.faiss", marker))
    (tmp_path / "v.json").write_text('{"kind": "verifier", "config": {}, "in_dim": 4, "extent_rad": 0.1}')
    with pytest.raises(Exception, match="(?i)header|safetensors|deserializ"):
        load_locator(_evil(tmp_path / "v.safetensors", marker))
    assert not marker.exists()


def test_upload_and_pixel_limits_are_set():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 50  # MB; Streamlit refuses bigger uploads itself
    assert MAX_PIXELS == 200_000_000
    with pytest.raises(ImageDecodeError, match="image too large"):
        decode_image(png_bomb(15_000))  # 225 megapixels declared: refused before any pixel is decoded
