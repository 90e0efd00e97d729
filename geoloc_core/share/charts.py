"""Charts as plain data: plotly figure specs (`{"data": [...], "layout": {...}}`) built without importing plotly.

The app wraps a spec in `plotly.graph_objects.Figure`; the report draws it with plotly.js, read from the installed
plotly package's files (`plotly_js`), so the core never imports plotly and runs without it.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd


def _values(column: pd.Series) -> list:
    """A column as JSON-ready values: NaN as null (plotly leaves a gap)."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in column.tolist()]


def _error_bars(table: pd.DataFrame, key: str) -> dict | None:
    """Error bars from a table's `key_lo` / `key_hi` columns (None where it has none: one split)."""
    if f"{key}_lo" not in table:
        return None
    return {"type": "data", "symmetric": False, "array": _values(table[f"{key}_hi"] - table[key]),
            "arrayminus": _values(table[key] - table[f"{key}_lo"])}


def _two_panels(titles: tuple[str, str], height: int) -> dict:
    """A layout of two side-by-side panels (what plotly's make_subplots(1, 2) lays out), each titled."""
    notes = [{"text": t, "x": x, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center", "yanchor": "bottom",
              "showarrow": False, "font": {"size": 16}} for t, x in zip(titles, (0.225, 0.775))]
    return {"xaxis": {"domain": [0, 0.45], "anchor": "y"}, "yaxis": {"anchor": "x"},
            "xaxis2": {"domain": [0.55, 1], "anchor": "y2"}, "yaxis2": {"anchor": "x2"},
            "annotations": notes, "showlegend": False, "height": height, "margin": {"t": 40, "b": 10}}


def experiment_chart(table: pd.DataFrame) -> dict:
    """Accuracy (with chance as a diamond) and median km per row of an experiment table, as two panels."""
    names = [f"{g} {m}".strip() for g, m in zip(table["graph"].fillna(""), table["method"])]
    data = [{"type": "bar", "x": names, "y": _values(table["acc"]), "name": "acc",
             "error_y": _error_bars(table, "acc")}]
    if "chance_acc" in table:
        data.append({"type": "scatter", "x": names, "y": _values(table["chance_acc"]), "mode": "markers",
                     "name": "chance", "marker": {"symbol": "diamond", "size": 10, "color": "black"}})
    data.append({"type": "bar", "x": names, "y": _values(table["median_km"]), "name": "median km",
                 "error_y": _error_bars(table, "median_km"), "xaxis": "x2", "yaxis": "y2"})
    titles = ("accuracy (held-out; ◆ chance for the row's region sizes)", "median error, km")
    return {"data": data, "layout": _two_panels(titles, 380)}


def compare_chart(table: pd.DataFrame, accuracy: str = "acc@25km") -> dict:
    """Median km and one accuracy per method of a `geoloc compare` table, with 95 % error bars where it has them."""
    data = [{"type": "bar", "y": table["method"].tolist(), "x": _values(table[key]), "orientation": "h", "name": key,
             "error_x": _error_bars(table, key), **({"xaxis": "x2", "yaxis": "y2"} if panel else {})}
            for panel, key in enumerate(("median_km", accuracy))]
    layout = _two_panels(("median error, km (lower is better)", f"{accuracy} (higher is better)"), 60 + 28 * len(table))
    layout["yaxis"]["autorange"] = layout["yaxis2"]["autorange"] = "reversed"
    return {"data": data, "layout": layout}


def plotly_js() -> str | None:
    """plotly.js as shipped inside the installed plotly package (None where plotly is not installed)."""
    try:
        spec = importlib.util.find_spec("plotly")
    except ImportError:  # an import hook that refuses plotly (a server that keeps the app libraries out)
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def chart_html(spec: dict, div_id: str) -> str:
    """A chart spec as an HTML block that draws itself with plotly.js (which the page must load once)."""
    payload = json.dumps(spec, allow_nan=False).replace("</", "<\\/")  # no `</script>` can close the block early
    return (f'<div id="{div_id}"></div><script>(function(s){{Plotly.newPlot("{div_id}", s.data, s.layout, '
            f'{{responsive: true}});}})({payload});</script>')
