"""The app in a real browser: Playwright drives Debian's headless Chromium against `streamlit run`.

Skipped where there is no Chromium (`apt install chromium`; CI has none). Screenshots of every
page go to $GEOLOC_SCREENSHOTS (docs/screenshots for the README) or a temporary folder; point
$GEOLOC_BROWSER_RUN at a real run (runs/croatia) for those, otherwise the tiny test run is used.
"""

import json
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

import geoloc_core.base.images  # noqa: F401 (registers HEIF with Pillow)
from conftest import REPO, shared
from geoloc_core.runs.folders import Run

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt install chromium)"),
              pytest.mark.slow]
PAGES = ("predict", "regions", "train", "evaluate", "data")


@pytest.fixture
def app_url(request, tmp_path):
    run = os.environ.get("GEOLOC_BROWSER_RUN") or str(request.getfixturevalue("tiny_run"))
    yield from _serve(run, tmp_path)


def _serve(run: str, tmp_path: Path, **settings: str):
    """`streamlit run app.py` on a free loopback port, with the server settings given (GEOLOC_MODE=...)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GEOLOC_RUN": str(Path(run).resolve()), "GEOLOC_RUNS": str(tmp_path / "no_other_runs"),
           **settings}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port",
                               str(port),
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
    # the map (its bundle loads lazily)
    page.locator("[data-testid='stDeckGlJsonChart']").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stDeckGlJsonChart']").count() == 2
    assert page.locator("[data-testid='stImage']").count() >= 2 * (1 + 5)  # each photo and its neighbour gallery
    assert page.get_by_text("km off").count() >= 2  # EXIF truth with its error, the HEIC's too
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete && "
                           "i.naturalWidth > 0)",
                           timeout=60_000)  # every picture, the HEIC included, decoded by the browser
    page.wait_for_timeout(4000)
    page.screenshot(path=str(shots / "predict.png"), full_page=True)
    for name in PAGES[1:]:
        page.goto(f"{app_url}/{name}")
        _idle(page)
        page.wait_for_timeout(4000)  # lazily loaded maps, charts and tables draw after the script ends
        assert page.locator("[data-testid='stException']").count() == 0, name
        if name == "regions" and page.get_by_text("Compare two iterations").count():
            # a confusion map where answers exist
            confused = page.get_by_text("Classifier graded on these regions").count()
            # + the iteration, stability, two side by side
            assert page.locator("[data-testid='stDeckGlJsonChart']").count() == 4 + confused
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert {p.name for p in shots.glob("*.png")} >= {f"{n}.png" for n in PAGES}  # a superset: other tests add their own


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
    assert (all(title in nav for title in ("Predict", "Regions", "Train", "Evaluate", "Similar places", "Data"))
            and "common" not in nav)


def test_a_viewer_sees_runs_and_jobs_but_no_control_that_starts_stops_or_deletes_work(tiny_run, tmp_path, page):
    """GEOLOC_MODE=viewer, with a fine-tuning job running (an editor would see Stop on it)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import geoloc_core, time; time.sleep(300)"])
    ft = Run(tiny_run).new_finetune("dt")
    ft.write_status("running", pid=sleeper.pid)
    server = _serve(str(tiny_run), tmp_path, GEOLOC_MODE="viewer")
    try:
        url = next(server)
        for name, shows in (("train", f"{ft.root.name}"), ("data", "Photos accepted"),
                            ("predict", "Drop one or more photos")):
            page.goto(f"{url}/{name}")
            page.get_by_text(shows).first.wait_for(timeout=120_000)
            _idle(page)
            assert page.locator("[data-testid='stException']").count() == 0, name
            assert page.get_by_text("Viewer mode").count() == 1, name
            buttons = page.locator("button").all_inner_texts()
            controls = [b for b in buttons
                        if any(c in b for c in ("Start", "Ingest", "Stop", "Resume", "queue", "Yes,"))]
            assert controls == [], (name, controls)
            assert page.get_by_label("Your name").count() == 0 and page.get_by_label("Folder or manifest").count() == 0
            if name == "train":
                assert page.get_by_text(f"{ft.root.name}: running").count() >= 1  # the job is shown, with no Stop
    finally:
        next(server, None)
        sleeper.kill()
        sleeper.wait()


ANALYSIS = (("regions", "Region signatures: typical and distinctive photos", "region_signatures"),
            ("regions", "Confusion on the map", "region_confusion"),
            ("regions", "Stability: which boundaries survive", "region_stability"),
            ("evaluate", "Where the data is thin", "coverage"))


def test_region_analysis_sections_draw_and_the_coverage_downloads(app_url, page, tmp_path, request):
    """Signatures, confusion, stability (Regions) and coverage (Evaluate) in a real browser,
    each screenshot on its own."""
    n_photos = len(Run(os.environ.get("GEOLOC_BROWSER_RUN") or request.getfixturevalue("tiny_run")).photo_table())
    shots = Path(os.environ.get("GEOLOC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    for name, header, shot in ANALYSIS:
        if name not in page.url:
            page.goto(f"{app_url}/{name}")
            _idle(page)
            page.wait_for_timeout(4000)
            assert page.locator("[data-testid='stException']").count() == 0, name
        title = page.get_by_text(header).first
        title.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(1500)  # maps draw when scrolled into view
        box = title.bounding_box()
        page.screenshot(path=str(shots / f"{shot}.png"), clip={"x": 0, "y": max(box["y"] - 10, 0), "width": 1400,
                                                               "height": min(1000, 2000 - max(box["y"] - 10, 0))})
        if name == "regions":
            # the regions, confusion and stability maps
            assert page.locator("[data-testid='stDeckGlJsonChart']").count() >= 3
            assert page.get_by_text("Regions per seed").count() == 1
        else:
            with page.expect_download() as download:
                page.get_by_text("Download coverage GeoJSON").click()
            geojson = json.loads(Path(download.value.path()).read_text())
            assert sum(f["properties"]["n_photos"] for f in geojson["features"]) == n_photos
            assert all(f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"][0]) == 7
                       for f in geojson["features"])


def test_shared_map_opens_offline_switches_layers_and_shows_a_photo_popup(tiny_run, page, tmp_path):
    """`geoloc map`'s file in a real browser: no request leaves the machine, no script error,
    every partition a layer."""
    from geoloc_core.cli import main

    out = tmp_path / "regions.html"
    assert main(["map", "--run", str(tiny_run), "--out", str(out)]) == 0
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(out.as_uri())
    page.wait_for_selector(".leaflet-control-layers")
    assert errors == [] and requests == []
    labels = page.locator(".leaflet-control-layers label").all_inner_texts()
    assert [t.strip() for t in labels[:3]] == ["DT w/o", "GG w/o", "RNG w/o"]
    assert page.locator(".leaflet-regions-pane path").count() >= 3  # the first partition's polygons
    page.locator(".marker-cluster").first.click()  # zooms in until the photos show
    page.wait_for_timeout(800)
    while page.locator(".leaflet-photos-pane path").count() == 0 and page.locator(".marker-cluster").count():
        page.locator(".marker-cluster").first.click()
        page.wait_for_timeout(800)
    page.locator(".leaflet-photos-pane path").first.click(force=True)
    page.wait_for_selector(".leaflet-popup-content img")
    assert "DT w/o: region" in page.locator(".leaflet-popup-content").inner_text()
    if os.environ.get("GEOLOC_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["GEOLOC_SCREENSHOTS"]) / "map.png"))


def _held_out_photo(run_dir: str) -> Path:
    from geoloc_core.runs.folders import Run

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
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete && "
                           "i.naturalWidth > 0)",
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
    assert (page.locator("[data-testid='stException']").count() == 0
            and page.locator("[data-testid='stDeckGlJsonChart']").count() == 1)
