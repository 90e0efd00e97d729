"""Tables printed by the commands: right-aligned columns, floats to three decimals."""

from __future__ import annotations

SUMMARY_COLUMNS = ("graph", "method", "n_edges", "n_regions", "modularity", "area_km2", "n_outside", "acc", "macro_f1",
                   "majority_acc", "median_km", "acc@1km", "acc@25km", "oracle_median_km")
VERDICT_COLUMNS = ("comparison", "metric", "difference", "interval", "verdict")


def print_table(rows: list[dict], columns: tuple[str, ...] = SUMMARY_COLUMNS) -> None:
    """The `columns` any row has, one line per row."""
    cols = [c for c in columns if any(c in r for r in rows)]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = [cols] + [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


def print_verdicts(verdicts: list[dict]) -> None:
    """Paired differences, each with its 95 % interval and verdict."""
    print_table([{**v, "interval": f"[{v['lo']:.3f}, {v['hi']:.3f}]"} for v in verdicts], VERDICT_COLUMNS)
