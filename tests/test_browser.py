"""The app in a real browser: Playwright drives Debian's headless Chromium against `streamlit run`.

Skipped where there is no Chromium (`apt install chromium`; CI has none). Screenshots of every
page go to $GEOLOC_SCREENSHOTS (docs/screenshots for the README) or a temporary folder; point
$GEOLOC_BROWSER_RUN at a real run (runs/croatia) for those, otherwise the tiny test run is used.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import geoloc_core.images  # noqa: F401 (registers HEIF with Pillow)
from conftest import shared

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt install chromium)"), pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
PAGES = ("predict", "regions", "train", "evaluate", "data")


@pytest.fixture
def app_url(request, tmp_path):
    run = os.environ.get("GEOLOC_BROWSER_RUN") or str(request.getfixturevalue("tiny_run"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GEOLOC_RUN": str(Path(run).resolve()), "GEOLOC_RUNS": str(tmp_path / "no_other_runs")}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser.new_page(viewport={"width": 1400, "height": 2000})
        browser.close()


def _idle(page) -> None:
    """Until Streamlit stops running the script (its status widget, once shown, disappears)."""
    try:
        page.locator("[data-testid='stStatusWidget']").wait_for(state="visible", timeout=5000)
    except sync_api.TimeoutError:
        pass  # the script was done before the widget could be seen
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=240_000)


def test_upload_a_photo_see_the_prediction_and_every_page(app_url, page, tmp_path):
    shots = Path(os.environ.get("GEOLOC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(app_url)
    page.get_by_text("Where was this photo taken?").wait_for(timeout=120_000)
    photo = shared("exif-samples") / "images" / "DSCN0010.jpg"  # Tuscany, with EXIF GPS
    jpeg = Image.open(photo)
    heic = tmp_path / "DSCN0010_as_iphone.heic"  # the same photo as a phone would save it, EXIF GPS kept
    jpeg.save(heic, "HEIF", exif=jpeg.getexif().tobytes(), quality=85)
    page.locator("input[type=file]").set_input_files([str(photo), str(heic)])
    page.get_by_text("Predicted location").nth(1).wait_for(timeout=240_000)
    _idle(page)
    page.locator("[data-testid='stDeckGlJsonChart']").first.wait_for(timeout=60_000)  # the map (its bundle loads lazily)
    assert page.locator("[data-testid='stDeckGlJsonChart']").count() == 2
    assert page.locator("[data-testid='stImage']").count() >= 2 * (1 + 5)  # each photo and its neighbour gallery
    assert page.get_by_text("km off").count() >= 2  # EXIF truth with its error, the HEIC's too
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)  # every picture, the HEIC included, decoded by the browser
    page.wait_for_timeout(4000)
    page.screenshot(path=str(shots / "predict.png"), full_page=True)
    for name in PAGES[1:]:
        page.goto(f"{app_url}/{name}")
        _idle(page)
        page.wait_for_timeout(4000)  # lazily loaded maps, charts and tables draw after the script ends
        assert page.locator("[data-testid='stException']").count() == 0, name
        if name == "regions" and page.get_by_text("Compare two iterations").count():
            assert page.locator("[data-testid='stDeckGlJsonChart']").count() == 3  # the iteration, then two side by side
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert sorted(p.name for p in shots.glob("*.png")) >= sorted(f"{n}.png" for n in PAGES)


@pytest.mark.parametrize(("name", "shows"), [("predict", "Drop one or more photos"), ("regions", "Regions table"),
                                             ("train", "Start a new fine-tuning run"), ("evaluate", "Evaluate"),
                                             ("data", "Photos accepted"), ("similar", "Where else looks like this?")])
def test_every_page_works_from_a_cold_deep_link(app_url, page, name, shows):
    """The first request of a fresh server is a bookmark: Streamlit took a `pages/` folder for a legacy multipage
    app then, listing helper modules as pages and drawing the page's header alone."""
    page.goto(f"{app_url}/{name}")
    page.get_by_text(shows).first.wait_for(timeout=120_000)
    _idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    nav = page.locator("[data-testid='stSidebarNav']").inner_text()
    assert all(title in nav for title in ("Predict", "Regions", "Train", "Evaluate", "Similar places", "Data")) and "common" not in nav


def _held_out_photo(run_dir: str) -> Path:
    from geoloc_core.runs import Run

    run = Run(Path(run_dir))
    _, is_test = run.read_split()
    return [p for p, t in zip(run.photo_table().abs_paths(), is_test) if t][0]


@pytest.fixture
def browser_run(request) -> str:
    return os.environ.get("GEOLOC_BROWSER_RUN") or str(request.getfixturevalue("tiny_run"))


def test_predict_explains_each_neighbour_with_its_matching_patches(browser_run, app_url, page, tmp_path):
    shots = Path(os.environ.get("GEOLOC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(app_url)
    page.get_by_text("Where was this photo taken?").wait_for(timeout=120_000)
    page.locator("input[type=file]").set_input_files([str(_held_out_photo(browser_run))])
    page.get_by_text("Predicted location").first.wait_for(timeout=240_000)
    _idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    explained = page.get_by_text("mutual patch pairs")
    assert explained.count() >= 5  # under each neighbour of the gallery
    assert page.get_by_text("Lines join patches").count() == 1
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(shots / "predict_explain.png"), full_page=True)


def test_similar_places_for_a_photo_then_a_region(app_url, page, tmp_path):
    shots = Path(os.environ.get("GEOLOC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(f"{app_url}/similar")
    page.get_by_text("Where else looks like this?").wait_for(timeout=120_000)
    _idle(page)
    page.locator("[data-testid='stDeckGlJsonChart']").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Embeddings:").count() >= 1 and page.locator("[data-testid='stDataFrame']").count() == 1
    page.wait_for_timeout(4000)
    page.screenshot(path=str(shots / "similar.png"), full_page=True)
    page.get_by_text("a region").click()
    _idle(page)
    page.get_by_text("Partition").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0 and page.locator("[data-testid='stDeckGlJsonChart']").count() == 1
