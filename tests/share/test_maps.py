"""Shareable maps: one HTML file with every partition as a layer, the photos clustered, opening without a network."""

import json
import re

import pytest

from geoloc_core.cli import main
from geoloc_core.locate.predict import read_predictions
from geoloc_core.share.maps import prediction_map, run_map, standalone_html


def external_references(html: str) -> list[str]:
    """What a browser would fetch to draw the page: scripts, stylesheets, images, CSS urls that point at the network."""
    tags = re.findall(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["\']?(https?://[^"\'\s>]+)', html)
    css = re.findall(r'url\(\s*["\']?(https?://[^)"\']+)', html)
    return tags + css


def test_run_map_has_every_partition_as_a_layer_and_opens_offline(tiny_run, tmp_path):
    html = standalone_html(run_map(tiny_run_run(tiny_run), tiles=False))
    for name in ("DT w/o", "GG w/o", "RNG w/o", "photos (40)", "land and borders (Natural Earth 1:110m, offline)"):
        assert name in html
    assert external_references(html) == []
    assert "L.markerClusterGroup" in html and "L.control.layers" in html
    assert html.count("data:image/jpeg;base64,") == 40  # every photo's thumbnail, embedded
    assert "training photos" in html and "area (km" in html  # the region popups carry the table row


def test_tiles_are_offered_switched_off(tiny_run):
    html = standalone_html(run_map(tiny_run_run(tiny_run), tiles=True))
    # a tile template, not a fetched resource
    assert "basemaps.cartocdn.com" in html and external_references(html) == []


def test_cli_map_draws_predictions_with_their_circles_and_neighbours(tiny_run, exif_folder, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(sorted(exif_folder.glob("*.jpg"))[0]), "--run", str(tiny_run), "--out", str(out), "--k",
                 "3", "--device", "cpu"]) == 0
    page = tmp_path / "map.html"
    assert main(["map", "--run", str(tiny_run), "--predictions", str(out / "predictions.csv"), "--graphs", "dt",
                 "--out", str(page)]) == 0
    html = page.read_text()
    assert "predictions (1)" in html and "uncertainty radius (km)" in html and "neighbour of prediction" in html
    assert "truth of" in html  # the EXIF truth, with the error line
    frame = read_predictions(out / "predictions.csv")
    named = json.loads(frame["neighbours"].iat[0])[0]["place"]
    assert frame["place"].iat[0].startswith("near ") and named.startswith("near ")
    assert html.count(frame["place"].iat[0]) >= 1 and named in html  # in the popups and the prediction's tooltip
    assert "GG w/o" not in html and external_references(html) == []
    assert "opens offline" in capsys.readouterr().out
    batch = standalone_html(prediction_map(read_predictions(out / "predictions.csv"),
                                           tiny_run_run(tiny_run).regions("dt")))
    # the Predict page's download
    assert "predictions (1)" in batch and '"regions"' in batch and external_references(batch) == []


def tiny_run_run(path):
    from geoloc_core.runs.folders import Run

    return Run(path)


@pytest.mark.parametrize("bad", ["folium.Marker"])
def test_a_map_that_would_need_the_network_is_refused(tiny_run, bad):
    import folium

    fmap = run_map(tiny_run_run(tiny_run), tiles=False)
    folium.Marker([45, 16], popup="needs jQuery and an icon font").add_to(fmap)
    with pytest.raises(ValueError, match="jQuery"):
        standalone_html(fmap)
