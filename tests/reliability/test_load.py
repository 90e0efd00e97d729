"""The server under load while it trains: 8 app sessions predict photos and open every page while a fine-tuning job
runs on a croatia-sized run (150 locations x 4 headings, tiny ViT); no exception, one predictor for all, and the
per-prediction latency recorded beside the same figure with no training running. Bounded: 8 sessions, 3 photos each,
a time limit on every phase; it asserts what must hold, not speed (`benchmarks/bench_load.py` measures that on
croatia-streetview)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st

import geoloc_core.locate.store as predictor_store_module
from conftest import TINY, jpeg_bytes, textured
from geoloc_core.cli import main
from geoloc_core.config import FinetuneConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_load import simulate, start_training, stop_training  # noqa: E402

pytestmark = pytest.mark.slow  # minutes: a croatia-sized run, a training process, 16 sessions


@pytest.fixture
def croatia_sized_run(tmp_path, tiny_checkpoint, isolated_cache) -> Path:
    """600 photos: 150 locations across Croatia's extent, four headings each (as croatia-streetview), a tiny ViT."""
    root = tmp_path / "croatia_sized"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(7)
    rows = []
    for loc in range(150):
        lat, lon = rng.uniform(42.4, 46.5), rng.uniform(13.5, 19.4)
        for heading in (0, 90, 180, 270):
            name = f"images/{loc:03d}_{heading}.jpg"
            (root / name).write_bytes(jpeg_bytes(textured(loc * 4 + heading // 90, size=(32, 40)), quality=80))
            rows.append({"path": name, "lat": lat, "lon": lon, "heading": heading, "location_id": f"L{loc}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    run = tmp_path / "run"
    assert main(["run", str(root), "--run", str(run), "--model", TINY.name, "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu"]) == 0
    return run


def test_eight_sessions_predict_and_open_every_page_while_a_fine_tuning_job_trains(croatia_sized_run, monkeypatch,
                                                                                   record_property):
    monkeypatch.setenv("GEOLOC_TILES", "off")  # nothing leaves this machine
    st.cache_resource.clear()
    loads = []
    real_load = predictor_store_module.load_predictor
    monkeypatch.setattr(predictor_store_module, "load_predictor", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    warm = simulate(croatia_sized_run, 1, 1, timeout_s=300)  # the predictor is built and loaded here, once
    assert not warm.errors, warm.errors
    idle = simulate(croatia_sized_run, 8, 3, timeout_s=600)
    ft = start_training(croatia_sized_run,
                        FinetuneConfig(rounds=1, epochs=10_000, unfrozen_blocks=1, batch_size=32, device="cpu"),
                        timeout_s=300)
    try:
        busy = simulate(croatia_sized_run, 8, 3, timeout_s=600)
        trained_throughout = ft.state() == "running"
        epochs = sum(r.get("kind") == "epoch" for r in ft.read_metrics())
    finally:
        assert stop_training(ft) == "stopped"
    assert not idle.errors and not busy.errors, "\n".join(idle.errors + busy.errors)
    assert trained_throughout, ft.log.read_text()[-2000:]  # the sessions really ran beside the training
    assert epochs >= 1
    assert (len(idle.latencies_s) == len(busy.latencies_s) == 24
            and all(t > 0 for t in idle.latencies_s + busy.latencies_s))
    assert idle.pages_opened == busy.pages_opened == 8 * 4  # every page, in every session
    assert len(loads) == 1  # one predictor for every session, training or not
    for name, load in (("idle", idle), ("training", busy)):
        record_property(f"{name}_p50_ms", round(load.ms(0.5), 1))
        record_property(f"{name}_p95_ms", round(load.ms(0.95), 1))
    print(f"\nno training: {idle.summary()}\nfine-tuning running ({epochs} epochs meanwhile): {busy.summary()}; "
          f"p50 ratio {busy.ms(0.5) / idle.ms(0.5):.2f}x")
