"""Issue 24's defects 1 and 6: nothing made before a re-split or a re-ingest is graded, offered or labelled as if it
were of the run's photos and split now. (Written against the public API only, so they ran on the code before the
fix, and failed there.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geoloc_core.analysis.experiment import run_experiment
from geoloc_core.config import FinetuneConfig, GraphConfig, IngestConfig
from geoloc_core.learn.finetune import finetune_rounds
from geoloc_core.locate.build import photo_regions
from geoloc_core.runs import stages
from geoloc_core.runs.folders import Run

FT = FinetuneConfig(graph="dt", rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")


def _resplit(run: Run) -> None:
    """`geoloc graph --split-seed 1` then `geoloc regions`."""
    stages.run_graph(run.root, GraphConfig(kinds=("dt",), test_frac=0.25, split_seed=1))
    stages.cut_regions(run.root, run.pipeline_config().regions)


def test_an_experiment_after_a_resplit_grades_every_row_on_the_held_out_photos_of_now(tiny_run):
    """Defect 1: the w/o and FT1 rows came from the old split's fine-tuning folder, graded on its held-out photos."""
    run = Run(tiny_run)
    run_experiment(run.root, FT, ("dt",))
    _resplit(run)
    table = run_experiment(run.root, FT, ("dt",))
    held_out = np.flatnonzero(run.read_split()[1])
    for method, answers in zip(table["method"], table["held_out"]):
        assert sorted(pd.read_csv(answers)["photo"]) == held_out.tolist(), method


def test_the_default_region_head_is_never_one_trained_on_todays_held_out_photos(tiny_run):
    """Defect 1: after a re-split, the Predict page's default head (the latest round) was the old split's."""
    run = Run(tiny_run)
    list(finetune_rounds(run.root, FT))
    assert run.latest_round("dt") is not None
    _resplit(run)
    assert run.latest_round("dt") is None
    assert run.finished_rounds("dt") == []


def test_region_labels_of_another_photo_list_are_refused_not_hidden(tiny_run, manifest_folder, tmp_path):
    """Defect 6: regions cut before a re-ingest (one photo fewer) were replaced by -1 for every photo."""
    pd.read_csv(manifest_folder / "manifest.csv").iloc[1:].to_csv(manifest_folder / "fewer.csv", index=False)
    stages.run_ingest(tiny_run, IngestConfig(data=str(manifest_folder), manifest=str(manifest_folder / "fewer.csv")))
    with pytest.raises(ValueError, match="photos.csv"):
        photo_regions(Run(tiny_run), "dt")
