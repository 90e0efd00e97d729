"""Retrieval with a fine-tuned backbone (`PredictorConfig.ft_round`) and the cross-validated lever table."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from geoloc_core.analysis.levers import Variant, larger_input, lever_variants, measure_levers, pair_rows, select_rows
from geoloc_core.base.storage import write_csv
from geoloc_core.config import CrossValConfig, FinetuneConfig, PredictConfig, PredictorConfig
from geoloc_core.evaluate.stats import location_folds
from geoloc_core.learn import finetune as ft
from geoloc_core.locate.predict import predict
from geoloc_core.locate.store import open_predictor
from geoloc_core.runs.folders import Run

CFG = FinetuneConfig(graph="dt", rounds=2, epochs=2, unfrozen_blocks=1, batch_size=8, device="cpu")


@pytest.fixture
def finetuned_run(tiny_run):
    list(ft.finetune_rounds(tiny_run, CFG))
    return tiny_run


def test_a_query_runs_through_the_rounds_blocks_into_the_space_the_database_was_embedded_in(finetuned_run):
    run = Run(finetuned_run)
    tuned = run.finetune_round("dt", 1)
    predictor = open_predictor(finetuned_run, PredictConfig(predictor=PredictorConfig(ft_round=1), device="cpu"))
    # its classifier names the region
    assert predictor.backbone.round == 1 and predictor.region_head is predictor.backbone
    stored = np.load(tuned.embeddings(1))
    assert not np.allclose(stored, run.read_embeddings()[0], atol=1e-3)  # fine-tuning moved the space
    rows = [0, 5, 11]
    preds, failed = predict([predictor.db["path"].iat[i] for i in rows], predictor)
    assert not failed
    for row, pred in zip(rows, preds):  # each database photo finds itself: the query's embedding is its stored FT1 one
        top = pred.neighbours[0]
        assert top.photo == predictor.db["photo"].iat[row] and top.similarity == pytest.approx(1.0, abs=2e-3)
    pretrained = open_predictor(finetuned_run, PredictConfig(device="cpu"))
    # the default still takes the latest classifier
    assert pretrained.backbone is None and pretrained.region_head.round == 2


def test_the_fine_tuned_query_costs_no_pretrained_blocks(finetuned_run, monkeypatch):
    """Without patch tokens to keep, the tower's own last blocks are skipped: the forward pass is as
    long as the plain one."""
    from geoloc_core.features import encoders

    calls = []
    real = encoders.finish_forward
    monkeypatch.setattr(encoders, "finish_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    predictor = open_predictor(finetuned_run, PredictConfig(predictor=PredictorConfig(ft_round=2), device="cpu"))
    path = predictor.db["path"].iat[2]
    [plain], _ = predict([path], predictor)
    assert calls == []
    # explaining needs the pretrained patch tokens: computed then
    [kept], _ = predict([path], predictor, keep_tokens=True)
    assert (calls and kept.tokens is not None and (kept.lat_deg, kept.lon_deg)
            == pytest.approx((plain.lat_deg, plain.lon_deg)))


def test_a_round_the_run_has_not_finished_or_another_descriptor_is_refused(finetuned_run):
    with pytest.raises(FileNotFoundError, match="finished round 3"):
        open_predictor(finetuned_run, PredictConfig(predictor=PredictorConfig(ft_round=3), device="cpu"))
    with pytest.raises(ValueError, match="cls descriptor"):
        open_predictor(finetuned_run,
                       PredictConfig(predictor=PredictorConfig(ft_round=1, descriptor="gem"), device="cpu"))


def test_levers_are_cross_validated_with_each_folds_own_fine_tuning(tiny_run):
    cv = CrossValConfig(folds=2, fold_seed=0)
    variants = lever_variants(PredictorConfig(), CFG.rounds, larger_input=40)  # the tiny tower's 5 x 5 patches of 8 px
    assert [v.name for v in variants][:3] == ["default", "FT1 backbone", "FT2 backbone"]
    table = measure_levers(tiny_run, variants, CFG, cv)
    run = Run(tiny_run)
    fold = location_folds(run.photo_table().frame["group"].to_numpy(), 2, 0)
    for i in range(2):  # each fold fine-tuned without its own locations, every photo re-embedded
        fold_run = run.cross_validation(2, 0).fold(i)
        assert np.array_equal(fold_run.read_split()[1], fold == i)
        assert fold_run.experiment.finetune("dt").embeddings(2).exists()
    assert [r["method"] for r in table.rows] == [v.name for v in variants]
    assert table.rows[1]["changes"] == "ft_round=1" and table.rows[0]["changes"] == "-"
    changes = {r["method"]: r["changes"] for r in table.rows}
    assert changes["input 40 px"] == "image_size=40" and changes["corner crops (test-time)"] == "tta=crops"
    for name in ("input 40 px", "corner crops (test-time)"):  # each embeds the photos its own way, not the default's
        assert not np.array_equal(table.errors[name], table.errors["default"]), name
    assert np.isfinite(table.errors[[v.name for v in variants]].to_numpy()).all()  # every photo held out once
    groups = run.photo_table().frame["group"].to_numpy()
    for v in variants:  # a row located together gives a location's photos one answer; single-photo rows do not
        spread = table.errors.groupby(groups)[v.name].nunique()
        assert (spread == 1).all() if v.together else (spread > 1).any(), v.name
    assert {v["comparison"] for v in table.verdicts} == {f"{v.name} vs default" for v in variants[1:]}
    for row in table.rows:
        assert row["median_km_lo"] <= row["median_km"] <= row["median_km_hi"]
    # any two rows paired again from the saved per-photo errors: the table's own verdicts for a row against the default
    write_csv(run.levers_errors, table.errors)
    run.record_table(run.levers_files, ["photos", "embeddings"], [variants, CFG, cv])  # as `geoloc levers` does
    again_paired = pair_rows(tiny_run, "FT1 backbone", "default", cv)
    assert again_paired == [v for v in table.verdicts if v["comparison"] == "FT1 backbone vs default"]
    with pytest.raises(ValueError, match="no row 'FT9'"):
        pair_rows(tiny_run, "FT9", "default", cv)
    with pytest.raises(ValueError, match="no row 'fold'"):  # the errors' other columns are not rows
        pair_rows(tiny_run, "fold", "default", cv)
    # a second call fine-tunes nothing again
    mtime = run.cross_validation(2, 0).fold(0).experiment.finetune("dt").round_checkpoint(2).stat().st_mtime
    again = measure_levers(tiny_run, variants[:2], CFG, cv)
    assert run.cross_validation(2, 0).fold(0).experiment.finetune("dt").round_checkpoint(2).stat().st_mtime == mtime
    assert np.array_equal(again.errors["FT1 backbone"], table.errors["FT1 backbone"])
    # a fold fine-tuned with other settings is refused, never passed off as these
    with pytest.raises(ValueError, match="other settings"):
        measure_levers(tiny_run, variants[:2], replace(CFG, epochs=3), cv)


def test_lever_rows_switch_the_region_prior_against_whichever_default():
    with_prior = {v.name: v for v in lever_variants(PredictorConfig(), 2)}
    assert with_prior["no region prior"].predictor.region_weight == 0 and "region prior" not in with_prior
    assert with_prior["FT2, together"].together and with_prior["FT2, together"].predictor.ft_round == 2
    # the table measured before the prior was default
    old = {v.name: v for v in lever_variants(PredictorConfig(region_weight=0.0), 2)}
    assert old["region prior"].predictor.region_weight == 1 and "no region prior" not in old
    assert old["FT2 + region prior"].predictor == replace(PredictorConfig(), ft_round=2, region_weight=1.0)
    assert old["FT2 + region prior, together"].together
    # nothing to combine
    assert not [v for v in lever_variants(PredictorConfig(region_weight=0.0), 0) if v.predictor.ft_round]


def test_a_variant_past_the_fine_tuning_rounds_or_a_single_split_is_refused(tiny_run):
    with pytest.raises(ValueError, match="FT3"):
        measure_levers(tiny_run, [Variant("default", PredictorConfig()), Variant("x", PredictorConfig(ft_round=3))],
                       CFG)
    with pytest.raises(ValueError, match="folds"):
        measure_levers(tiny_run, [Variant("default", PredictorConfig())], CFG, CrossValConfig(folds=1))


def test_the_backbone_head_splits_one_pass_into_embedding_and_region(finetuned_run):
    from geoloc_core.learn.classifier import BackboneHead

    predictor = open_predictor(finetuned_run, PredictConfig(predictor=PredictorConfig(ft_round=1), device="cpu"))
    head = BackboneHead(predictor.backbone)
    prefix = torch.randn(3, 5, predictor.backbone.suffix.ln_post.normalized_shape[0])
    with torch.no_grad():
        emb, log_probs = head.split(head(prefix).numpy())
        expected = predictor.backbone(prefix).numpy()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5) and np.allclose(log_probs, expected, atol=1e-5)


def test_the_levers_command_measures_the_rows_asked_for_and_pairs_them_again(tiny_run, capsys, caplog):
    from geoloc_core.cli import main

    levers = ["levers", "--run", str(tiny_run), "--folds", "2"]
    assert main([*levers, "--rounds", "0", "--larger-input", "40", "--rows", "input 40 px", "corner crops (test-time)",
                 "--device", "cpu"]) == 0
    rows = pd.read_csv(Run(tiny_run).levers_table).set_index("method")
    # the default always, then the table's order
    assert list(rows.index) == ["default", "corner crops (test-time)", "input 40 px"]
    assert (rows.loc["input 40 px", "changes"] == "image_size=40" and rows.loc["corner crops (test-time)", "changes"]
            == "tta=crops")
    assert "input 40 px vs default" in capsys.readouterr().out
    assert main([*levers, "--pair", "input 40 px", "corner crops (test-time)"]) == 0
    assert "input 40 px vs corner crops (test-time)" in capsys.readouterr().out
    assert main([*levers, "--rounds", "0", "--rows", "flip"]) == 2 and "no lever row 'flip'" in caplog.text
    # a measuring flag beside --pair would be ignored: refused
    assert (main([*levers, "--larger-input", "40", "--pair", "input 40 px", "default"]) == 2
            and "measures nothing" in caplog.text)


def test_the_higher_resolution_row_only_where_the_encoder_takes_the_size_and_the_run_is_smaller(tiny_run, caplog):
    assert larger_input(tiny_run, 40) == 40  # the tiny tower: 32 px, patches of 8
    assert larger_input(tiny_run, 0) == 0
    assert larger_input(tiny_run, 322) == 0 and "not a multiple of" in caplog.text
    assert larger_input(tiny_run, 32) == 0 and "no larger than the 32 px" in caplog.text
    assert not [v for v in lever_variants(PredictorConfig(), 0, larger_input=0) if v.image_size]
    assert [v.name for v in lever_variants(PredictorConfig(), 0, larger_input=40) if v.image_size] == ["input 40 px"]


def test_rows_are_chosen_by_their_names_commas_and_all():
    variants = lever_variants(PredictorConfig(), 2)
    chosen = select_rows(variants, ["FT2, together", "flip (test-time)"])
    assert [v.name for v in chosen] == ["default", "flip (test-time)", "FT2, together"]
    with pytest.raises(ValueError, match="no lever row 'FT2'"):
        select_rows(variants, ["FT2"])
