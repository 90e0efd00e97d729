"""Prediction latency while the server trains: N app sessions at once predict photos and open every page, first with
nothing else running, then with a fine-tuning job running (started through the job queue, as the Train page does).

    .venv/bin/python benchmarks/bench_load.py --run runs/croatia [--sessions 8] [--photos 4]

Prints p50 and p95 of one prediction (the `predict` call for one photo inside a session's page run, the predictor
already loaded) in both cases, and their ratio. Sessions are Streamlit AppTest sessions in threads of this process,
sharing one predictor as a server's sessions do; nothing leaves this machine. The fine-tuning job (one long round,
stopped once the sessions are done) runs in its own process and its folder is removed afterwards unless --keep.
`tests/reliability/test_load.py` runs the same load, bounded, on a croatia-sized run with a tiny ViT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGES = ("regions", "train", "evaluate", "data")  # opened by each session after it has predicted


@dataclass
class Load:
    """What a crowd of sessions saw: one latency per prediction (s), every error, the pages opened."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pages_opened: int = 0

    def ms(self, q: float) -> float:
        return float(np.quantile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    def summary(self) -> str:
        return f"{len(self.latencies_s)} predictions: p50 {self.ms(0.5):.1f} ms, p95 {self.ms(0.95):.1f} ms"


def simulate(run: Path, sessions: int, photos: int, timeout_s: float = 600) -> Load:
    """`sessions` app sessions at once, each picking `photos` held-out photos one at a time on the Predict page (one
    prediction per page run, timed), then opening every other page; any exception on any page is an error."""
    import streamlit.testing.v1.util as testing_util
    from streamlit.testing.v1 import AppTest

    import geoloc_core.locate.predict as predict_module

    load, lock, real_predict = Load(), threading.Lock(), predict_module.predict

    def timed(paths, model, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real_predict(paths, model, *args, **kwargs)
        finally:
            if len(paths) == 1:
                with lock:
                    load.latencies_s.append(time.perf_counter() - start)

    def page(name: str) -> AppTest:
        at = AppTest.from_file(str(REPO / "views" / f"{name}.py"), default_timeout=timeout_s)
        at.session_state["run_dir"] = str(run)
        at.session_state["user"] = "load test"
        return at.run()

    def session(i: int) -> None:
        try:
            at = page("predict")
            names = at.multiselect[0].options
            for k in range(photos):
                at.multiselect[0].set_value([names[(i * photos + k) % len(names)]]).run()
                if at.exception or len(at.subheader) != 1:
                    raise AssertionError(f"predict: {at.exception or 'no prediction shown'}")
            for name in PAGES:
                other = page(name)
                if other.exception:
                    raise AssertionError(f"{name}: {other.exception}")
                with lock:
                    load.pages_opened += 1
        except Exception as exc:  # noqa: BLE001 - every session's failure is reported, with its number
            with lock:
                load.errors.append(f"session {i}: {''.join(traceback.format_exception(exc))}")

    predict_module.predict = timed  # each page run imports it afresh from the module
    threads = [threading.Thread(target=session, args=(i,), name=f"session {i}", daemon=True) for i in range(sessions)]
    deadline = time.time() + timeout_s
    try:
        # AppTest flips the process-wide option `global.appTest` around each run; held on for the whole crowd (see
        # tests/reliability/test_concurrency.py), every session sees it as the app does
        with testing_util.patch_config_options({"global.appTest": True}), _one_runtime(), one_compile_at_a_time():
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.time()))
    finally:
        predict_module.predict = real_predict
    load.errors += [f"{t.name} did not finish within {timeout_s:.0f} s" for t in threads if t.is_alive()]
    return load


@contextlib.contextmanager
def one_compile_at_a_time():
    """A server compiles each page once, in its one locked script cache; AppTest gives every session a cache of its own,
    and CPython 3.11's compiler run in several threads at once fails at random ("SystemError: AST constructor recursion
    depth mismatch"). For the crowd, the sessions' caches compile one page at a time, as the server's one cache does."""
    from unittest import mock

    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    lock, compile_page = threading.Lock(), ScriptCache.get_bytecode

    def serialised(self, script_path: str):
        with lock:
            return compile_page(self, script_path)

    with mock.patch.object(ScriptCache, "get_bytecode", serialised):
        yield


@contextlib.contextmanager
def _one_runtime():
    """AppTest gives the process a mock Runtime for each run and unsets it when that run ends, while other sessions'
    runs go on; their script threads then fail with "Runtime hasn't been created!" (AppTest is not thread-safe there; a
    server has one Runtime for all sessions). For the crowd, a run that finds none gets a standing one, as on a
    server."""
    from unittest import mock

    from streamlit.runtime.caching.storage.dummy_cache_storage import MemoryCacheStorageManager
    from streamlit.runtime.dataframe_source_manager import DataframeSourceManager
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.runtime.runtime import Runtime

    standing = mock.MagicMock(spec=Runtime)
    standing.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    standing.cache_storage_manager = MemoryCacheStorageManager()
    standing.dataframe_source_mgr = DataframeSourceManager()
    with mock.patch.object(Runtime, "instance", classmethod(lambda cls: cls._instance or standing)), \
            mock.patch.object(Runtime, "exists", classmethod(lambda cls: True)):
        yield


def start_training(run: Path, cfg, timeout_s: float = 1800):
    """A fine-tuning job through the queue, once it is training (its first epoch under way); returns its folder."""
    from geoloc_core.runs.folders import Run
    from geoloc_core.server import jobs

    ft = jobs.start_finetune(Run(run), cfg, user="load test")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        progress, state = ft.read_progress() or {}, ft.state()
        if "epoch" in progress.get("phase", "") or state not in ("queued", "running"):
            break
        time.sleep(0.5)
    if ft.state() != "running":
        raise RuntimeError(f"{ft.root.name} is {ft.state()} before the sessions began: {ft.log.read_text()[-2000:]}")
    return ft


def stop_training(ft, timeout_s: float = 60) -> str:
    from geoloc_core.server import jobs

    jobs.stop(ft)
    deadline = time.time() + timeout_s
    while ft.state() == "running" and time.time() < deadline:
        time.sleep(0.2)
    return ft.state()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--photos", type=int, default=4, help="predictions per session, one photo each")
    ap.add_argument("--graph", default="dt")
    ap.add_argument("--keep", action="store_true", help="keep the fine-tuning folder the benchmark made")
    a = ap.parse_args(argv)
    os.environ.setdefault("GEOLOC_STATE_DIR", tempfile.mkdtemp(prefix="geoloc-bench-queue-"))  # not the server's queue
    os.environ.setdefault("GEOLOC_TILES", "off")

    import geoloc_core.locate.store as predictor_store_module
    from bench_core import machine
    from geoloc_core.config import FinetuneConfig

    loads, real_load = [], predictor_store_module.load_predictor
    predictor_store_module.load_predictor = lambda *x, **k: loads.append(1) or real_load(*x, **k)
    run = a.run.resolve()
    print(f"machine: {machine()}; run {run}; {a.sessions} sessions x {a.photos} predictions, then pages "
          f"{', '.join(PAGES)}")
    start = time.perf_counter()
    warm = simulate(run, 1, 1)  # loads (or builds) the predictor and fills the pages' caches: not timed below
    print(f"warm-up  {time.perf_counter() - start:.0f} s, "
          f"{warm.summary()}{'; errors: ' + warm.errors[0] if warm.errors else ''}")
    idle = simulate(run, a.sessions, a.photos)
    print(f"idle     {idle.summary()}, {idle.pages_opened} pages opened, {len(idle.errors)} errors")
    start = time.perf_counter()
    ft = start_training(run, FinetuneConfig(graph=a.graph, rounds=1, epochs=1000))
    print(f"training {ft.root.name} started, first epoch under way after {time.perf_counter() - start:.0f} s")
    try:
        busy = simulate(run, a.sessions, a.photos)
        still = ft.state() == "running"
        print(f"busy     {busy.summary()}, {busy.pages_opened} pages opened, {len(busy.errors)} errors; "
              f"fine-tuning still running at the end: {still} ({(ft.read_progress() or {}).get('phase')})")
    finally:
        print(f"fine-tuning job: {stop_training(ft)}")
        if not a.keep:
            shutil.rmtree(ft.root, ignore_errors=True)
    for error in idle.errors + busy.errors:
        print(error)
    print(f"\npredictor loaded {len(loads)} time(s) for every session")
    print("| sessions x predictions | p50 ms | p95 ms |\n|---|---|---|")
    print(f"| {a.sessions} x {a.photos}, no training | {idle.ms(0.5):.0f} | {idle.ms(0.95):.0f} |")
    print(f"| {a.sessions} x {a.photos}, fine-tuning running | {busy.ms(0.5):.0f} | {busy.ms(0.95):.0f} |")
    print(f"| ratio (training / none) | {busy.ms(0.5) / idle.ms(0.5):.2f}x | {busy.ms(0.95) / idle.ms(0.95):.2f}x |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
