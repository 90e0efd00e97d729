"""The latency of each accuracy lever's predictor beside the default's, measured interleaved in one run.

    .venv/bin/python benchmarks/bench_levers.py --run RUN [--photos 20] [--ft-round 2] [--larger-input 322]

RUN needs a finished fine-tuning round for `--ft-round` over DT (`geoloc finetune`, or one fold of
`geoloc levers`: RUN/experiment_k5_seed0/fold0). One photo at a time, `predict([path])` end to end
(read, decode, one forward pass, search, candidates, verify), the variants taking turns photo by photo
so machine noise hits them alike. p50 and p90 in ms, and each variant's p50 over the default's; then 4 photos
located together against the same 4 located alone, per photo. The higher-resolution row is the default predictor with
the encoder at `--larger-input` px: a run embedded at that size (`geoloc run --image-size`) would find other
neighbours, at the same search cost, so the query's larger forward pass is the whole difference in time.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_predict import timed_predict  # noqa: E402

from bench_core import machine  # noqa: E402
from geoloc_core.analysis.levers import larger_input  # noqa: E402
from geoloc_core.config import LARGER_INPUT, PredictConfig, PredictorConfig  # noqa: E402
from geoloc_core.features.encoders import load_encoder  # noqa: E402
from geoloc_core.locate.predict import predict  # noqa: E402
from geoloc_core.locate.store import open_predictor  # noqa: E402
from geoloc_core.runs.folders import Run  # noqa: E402


def variants(ft_round: int) -> dict[str, PredictConfig]:
    """The default and each lever that changes a single photo's path (photos located together: `together_cost`)."""
    base = PredictConfig(device="cpu")  # the default has the region prior (region_weight 1)
    levers = {"no region prior": PredictorConfig(region_weight=0.0),
              f"FT{ft_round} backbone": PredictorConfig(ft_round=ft_round),
              "top 3 regions": PredictorConfig(top_regions=3), "flip (test-time)": PredictorConfig(tta="flip"),
              "corner crops (test-time)": PredictorConfig(tta="crops")}
    return {"default": base, **{name: replace(base, predictor=cfg) for name, cfg in levers.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--ft-round", type=int, default=2)
    parser.add_argument("--larger-input", type=int, default=LARGER_INPUT)
    a = parser.parse_args()
    predictors = {name: open_predictor(a.run, cfg) for name, cfg in variants(a.ft_round).items()}
    size = larger_input(a.run, a.larger_input)  # 0 where the run's encoder cannot take it, or is at that size already
    if size:
        predictors[f"input {size} px"] = larger = copy.copy(predictors["default"])
        embed = Run(a.run).pipeline_config().embed
        larger.encoder = load_encoder(embed.model, embed.checkpoint, embed.pretrained, "cpu", size)
    db = next(iter(predictors.values())).db
    paths = [Path(p) for p in db["path"].iloc[:: max(1, len(db) // (a.photos + 1))][: a.photos + 1]]
    for predictor in predictors.values():
        predict([paths[0]], predictor)  # warm-up: threads, allocator, first-call costs
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for path in paths[1:]:
        for name, predictor in predictors.items():
            times[name].append(timed_predict(path, predictor) * 1e3)
    print(f"{machine()}; {len(paths) - 1} photos of {a.run}, one at a time, interleaved")
    ref = np.median(times["default"])
    for name, t in times.items():
        print(f"{name:>24}: p50 {np.median(t):7.1f} ms, p90 {np.quantile(t, 0.9):7.1f} ms, p50 "
              f"{np.median(t) / ref:.2f}x the default")
    together, alone = together_cost(predictors["default"], paths[1:5])
    print(f"4 photos in one batch, default predictor: {together:.1f} ms per photo located together, {alone:.1f} ms "
          f"alone ({together / alone:.2f}x)")


def together_cost(predictor, paths: list[Path], repeats: int = 5) -> tuple[float, float]:
    """p50 ms per photo of locating a batch of photos as one place and of locating the same batch with each photo alone,
    interleaved: what the joint scoring of the group's pooled candidates adds."""
    times = {"together": [], "alone": []}
    for _ in range(repeats):
        for name, groups in (("together", ["place"] * len(paths)), ("alone", None)):
            start = time.perf_counter()
            preds, _ = predict(paths, predictor, groups=groups)
            times[name].append((time.perf_counter() - start) * 1e3 / len(paths))
            assert len(preds) == len(paths)
    return float(np.median(times["together"])), float(np.median(times["alone"]))


if __name__ == "__main__":
    main()
