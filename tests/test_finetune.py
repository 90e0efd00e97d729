import dataclasses

import numpy as np
import pytest
import torch

import geoloc_core.finetune as ft
from geoloc_core import runs
from geoloc_core.cli import main
from geoloc_core.config import FinetuneConfig

CFG = FinetuneConfig(graph="dt", rounds=2, epochs=2, unfrozen_blocks=1, batch_size=8, device="cpu")


def is_partition(labels: np.ndarray) -> bool:
    return labels.dtype.kind == "i" and sorted(np.unique(labels)) == list(range(labels.max() + 1))


def test_rounds_yield_wo_then_ft_with_partitions_metrics_and_checkpoints(tiny_run, tmp_path):
    out = tmp_path / "ft"
    results = list(ft.finetune_rounds(tiny_run, CFG, out_dir=out))
    assert [r.name for r in results] == ["w/o", "FT1", "FT2"]
    for r in results:
        assert len(r.labels) == 40 and is_partition(r.labels) and is_partition(r.next_labels)
        assert r.emb.shape == (40, 16) and np.allclose(np.linalg.norm(r.emb, axis=1), 1, atol=1e-4)
        assert {"acc", "macro_f1", "n_regions", "median_km", "acc@25km"} <= set(r.metrics)
    assert results[1].labels.tolist() == results[0].next_labels.tolist()  # FT1 learns the w/o regions
    assert results[2].labels.tolist() == results[1].next_labels.tolist()
    assert not np.allclose(results[2].emb, results[0].emb)  # fine-tuning moved the features
    records = runs.read_metrics(out)
    epochs = [(r["round"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert epochs == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all({"loss", "train_acc", "acc", "macro_f1", "n_regions", "train_img_per_s"} <= set(r) for r in records if r["kind"] == "epoch")
    for k in (0, 1, 2):
        assert (out / f"regions_r{k}.geojson").exists() and (out / f"embeddings_r{k}.npy").exists()
    saved = torch.load(out / "checkpoints" / "round2.pt", weights_only=True)
    assert saved["unfrozen_blocks"] == 1 and "weight" in saved["head"]


def test_a_crashed_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(tiny_run, tmp_path, monkeypatch):
    reference = list(ft.finetune_rounds(tiny_run, CFG, out_dir=tmp_path / "ref"))
    calls = {"n": 0}
    real_train_epoch = ft.train_epoch

    def crash_on_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # round 2, epoch 0: after FT1 finished
            raise KeyboardInterrupt("killed")
        return real_train_epoch(*args, **kwargs)

    monkeypatch.setattr(ft, "train_epoch", crash_on_third_epoch)
    out = tmp_path / "crashed"
    done = []
    with pytest.raises(KeyboardInterrupt):
        for r in ft.finetune_rounds(tiny_run, CFG, out_dir=out):
            done.append(r.name)
    assert done == ["w/o", "FT1"]
    monkeypatch.setattr(ft, "train_epoch", real_train_epoch)
    resumed = list(ft.finetune_rounds(tiny_run, CFG, out_dir=out))
    assert [r.name for r in resumed] == ["FT2"]
    assert resumed[0].next_labels.tolist() == reference[2].next_labels.tolist()
    assert resumed[0].metrics == pytest.approx(reference[2].metrics)
    epochs = [(r["round"], r["epoch"]) for r in runs.read_metrics(out) if r["kind"] == "epoch"]
    assert epochs == [(1, 0), (1, 1), (2, 0), (2, 1)]  # nothing lost, nothing twice


def test_mid_round_resume_from_the_cli_and_a_changed_config_is_refused(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "ft"
    real_train_epoch = ft.train_epoch
    calls = {"n": 0}

    def crash_on_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_train_epoch(*args, **kwargs)

    monkeypatch.setattr(ft, "train_epoch", crash_on_second_epoch)
    args = ["finetune", "--run", str(tiny_run), "--out", str(out), "--rounds", "1", "--epochs", "2", "--unfrozen-blocks", "1",
            "--batch-size", "8", "--device", "cpu"]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert runs.read_status(out)["state"] == "failed"
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    monkeypatch.setattr(ft, "train_epoch", real_train_epoch)
    assert main(["finetune", "--resume", str(out), "--device", "cpu"]) == 0
    assert runs.read_status(out)["state"] == "done"
    rounds = [r for r in runs.read_metrics(out) if r["kind"] == "round"]
    assert [r["name"] for r in rounds] == ["w/o", "FT1"]
    with pytest.raises(ValueError, match="resume it with that config"):
        list(ft.finetune_rounds(tiny_run, dataclasses.replace(CFG, rounds=1, epochs=3, unfrozen_blocks=1), out_dir=out))
