"""Saved predictors shared by processes (`locate.store`): a load during a save sees a whole predictor, old or new."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import REPO
from geoloc_core.config import PredictConfig
from geoloc_core.locate.store import load_predictor
from geoloc_core.runs.folders import Run

MAX_SAVES = 100_000  # the writer's bound, should the reader never tell it to stop
LOADS = 25

# Builds two different predictors of the run, then saves one or the other (a seeded choice) into one store until told
# to stop; says what each looks like once the store holds a whole one.
WRITER = """
import json, sys
from pathlib import Path
import numpy as np
from geoloc_core.config import LocatorConfig, PredictorConfig
from geoloc_core.locate.build import build_predictor
from geoloc_core.locate.store import save_predictor
from geoloc_core.runs.folders import PredictorStore
run, store, stop, max_saves = Path(sys.argv[1]), PredictorStore(Path(sys.argv[2])), Path(sys.argv[3]), int(sys.argv[4])
quick = LocatorConfig(epochs=2)  # a verifier barely trained: what is saved matters here, not how well it places
both = [build_predictor(run, PredictorConfig(k=5, locator=quick)),
        build_predictor(run, PredictorConfig(k=3, verify=False), "train")]
look = lambda p: [p.cfg.k, len(p.db), p.verifier is not None, float(np.sum(p.calibration_errors_km))]
save_predictor(both[0], store)
print(json.dumps([look(p) for p in both]), flush=True)
rng = np.random.default_rng(0)
for _ in range(max_saves):
    if stop.exists():
        break
    save_predictor(both[rng.integers(2)], store)
"""


def test_a_load_while_another_process_saves_again_and_again_sees_a_whole_predictor(tiny_run, tmp_path):
    store = Run(tiny_run).predictor("cls", "all", "shared")
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tiny_run), str(store.root), str(stop), str(MAX_SAVES)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = writer.stdout.readline()
        assert line, writer.stderr.read()[-3000:]
        looks = json.loads(line)
        for _ in range(LOADS):
            p = load_predictor(store, tiny_run, PredictConfig(device="cpu"))
            look = [p.cfg.k, len(p.db), p.verifier is not None, float(np.sum(p.calibration_errors_km))]
            assert p.index.ntotal == len(p.db) and look in looks, f"a torn predictor: {look}, saved were {looks}"
        assert writer.poll() is None, writer.stderr.read()[-3000:]  # every load ran while the writer was saving
    finally:
        stop.touch()
        writer.wait(timeout=600)
    assert writer.returncode == 0, writer.stderr.read()[-3000:]
