import dataclasses

import numpy as np
import pytest
import torch

import geoloc_core.learn.finetune as ft
from geoloc_core.cli import main
from geoloc_core.config import FinetuneConfig
from geoloc_core.runs.folders import FinetuneRun, Folder

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
    records = Folder(out).read_metrics()
    epochs = [(r["round"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert epochs == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all({"loss", "train_acc", "acc", "macro_f1", "n_regions", "train_img_per_s"} <= set(r) for r in records
               if r["kind"] == "epoch")
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
    epochs = [(r["round"], r["epoch"]) for r in Folder(out).read_metrics() if r["kind"] == "epoch"]
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
    args = ["finetune", "--run", str(tiny_run), "--out", str(out), "--rounds", "1", "--epochs", "2",
            "--unfrozen-blocks", "1", "--batch-size", "8", "--device", "cpu"]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert Folder(out).read_status()["state"] == "stopped"  # Ctrl-C: stopped, to resume
    assert torch.load(FinetuneRun(out).last_checkpoint, weights_only=True)["epoch"] == 0
    monkeypatch.setattr(ft, "train_epoch", real_train_epoch)
    assert main(args) == 2  # starting a new run into a folder that holds one is refused, never a silent resume
    assert main(["resume", str(out), "--device", "cpu"]) == 0
    assert Folder(out).read_status()["state"] == "done"
    rounds = [r for r in Folder(out).read_metrics() if r["kind"] == "round"]
    assert [r["name"] for r in rounds] == ["w/o", "FT1"]
    assert main(["resume", str(out), "--device", "cpu"]) == 0  # finished: nothing to resume, nothing added
    assert [r["name"] for r in Folder(out).read_metrics() if r["kind"] == "round"] == ["w/o", "FT1"]
    with pytest.raises(ValueError, match="resume it with that config"):
        list(ft.finetune_rounds(tiny_run, dataclasses.replace(CFG, rounds=1, epochs=3, unfrozen_blocks=1), out_dir=out))


def test_resume_works_from_any_working_directory(tiny_run, tmp_path, monkeypatch):
    """The run's path was recorded as given (relative) and resume read it against the working directory."""
    monkeypatch.chdir(tiny_run.parent)
    real_train_epoch = ft.train_epoch

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ft, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        main(["finetune", "--run", tiny_run.name, "--rounds", "1", "--epochs", "1", "--unfrozen-blocks", "1",
              "--device", "cpu"])
    out = FinetuneRun(tiny_run / "finetune_dt")
    assert out.last_checkpoint.exists()
    monkeypatch.setattr(ft, "train_epoch", real_train_epoch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["resume", str(out.root), "--device", "cpu"]) == 0
    assert out.read_status()["state"] == "done"


def test_each_phase_reports_its_progress_for_the_train_page(tiny_run, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(FinetuneRun, "write_progress",
                        lambda self, phase, done, total: seen.append((phase, done, total)))
    list(ft.finetune_rounds(tiny_run, dataclasses.replace(CFG, rounds=1, epochs=1), out_dir=tmp_path / "ft"))
    phases = list(dict.fromkeys(p for p, _, _ in seen))
    assert phases == ["caching prefix tokens", "FT1 epoch 1 of 1", "FT1: re-embedding every photo"]
    assert all(done <= total for _, done, total in seen)
    assert [(d, t) for p, d, t in seen if p == "caching prefix tokens"][-1] == (40, 40)  # each phase ends full
