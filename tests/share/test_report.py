"""The run report: one HTML page with the data summary, the region map, and the tables and charts the run has."""

import re

from geoloc_core.cli import main
from geoloc_core.runs.folders import Run
from geoloc_core.share.report import report_html


def test_report_has_its_sections_and_opens_offline(tiny_run, tmp_path, capsys):
    assert main(["compare", "--run", str(tiny_run), "--descriptors", "cls", "--k", "3"]) == 0
    page = tmp_path / "report.html"
    assert main(["report", "--run", str(tiny_run), "--out", str(page), "--no-tiles"]) == 0
    html = page.read_text()
    for heading in ("<h2>Data</h2>", "<h2>Regions</h2>",
                    "<h2>Locating photos: every method on held-out locations</h2>"):
        assert heading in html
    assert "<b>40</b>photos" in html and "<b>20</b>locations" in html and "north-south" in html
    # the map, every partition
    assert "<iframe title='region map' srcdoc=" in html and "DT w/o" in html and "RNG w/o" in html
    assert "kNN-CLS" in html and "Plotly.newPlot" in html  # the compare table and its chart
    assert not re.search(r'<script[^>]+src=["\']https?://', html)  # plotly.js inline, not from a CDN
    assert "opens offline" in capsys.readouterr().out


def test_report_without_regions_or_tables_still_says_what_the_run_has(tiny_run):
    run = Run(tiny_run)
    for graph in run.graphs():
        run.regions(graph).remove()
    html = report_html(run)
    assert ("<h2>Data</h2>" in html and "<h2>Regions</h2>" not in html and "Experiment" not in html
            and "Plotly" not in html)
