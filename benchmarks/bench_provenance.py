"""What checking provenance on every read costs, on a run folder.

    .venv/bin/python benchmarks/bench_provenance.py RUN [--repeat 50]

- `predictor_version`: the app's in-memory predictor key, computed on every page run (every input's record checked,
  stamps as the fast path);
- `check("regions:dt")`: the deepest chain of a run artefact (photos, embeddings, split, graph, regions);
- the same regions check once every stamp has moved (a copied folder: each file hashed once, stamps refreshed);
- reading embeddings.npy without a check, the reference the check is paid beside.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from geoloc_core.base import storage
from geoloc_core.config import PredictConfig
from geoloc_core.locate.store import predictor_version
from geoloc_core.runs import provenance
from geoloc_core.runs.folders import Run


def per_call_ms(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeat", type=int, default=50)
    a = parser.parse_args()
    run = Run(a.run)
    graph = run.graphs()[0]
    rows = {"predictor_version": per_call_ms(lambda: predictor_version(run.root, PredictConfig()), a.repeat),
            f"check regions:{graph}": per_call_ms(lambda: run.check(f"regions:{graph}"), a.repeat),
            "read embeddings.npy (no check)": per_call_ms(lambda: np.asarray(storage.read_npy(run.embeddings)),
                                                          a.repeat)}
    for record in run.root.glob("*.provenance.json"):  # every stamp moved: the contents decide once, then stamps again
        saved = storage.read_json(record)
        storage.write_json(record, {**saved, "stamps": {k: "0:0" for k in saved["stamps"]}})
    provenance._content.cache_clear()
    rows[f"check regions:{graph}, stamps moved (first read)"] = per_call_ms(lambda: run.check(f"regions:{graph}"), 1)
    rows[f"check regions:{graph}, after"] = per_call_ms(lambda: run.check(f"regions:{graph}"), a.repeat)
    n = len(run.photo_table())
    print(f"{run.root} ({n} photos, embeddings {run.embeddings.stat().st_size / 2**20:.1f} MiB)")
    for name, ms in rows.items():
        print(f"  {name:<55} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
