"""The predicted region from the latest fine-tuning round's classifier, computed inside the embedding pass."""

import numpy as np
import pytest
import torch

from geoloc_core.base.geo import haversine_km
from geoloc_core.config import FinetuneConfig, PredictConfig
from geoloc_core.features.encoders import load_encoder
from geoloc_core.learn import finetune as ft
from geoloc_core.learn.classifier import load_region_head
from geoloc_core.locate.predict import predict, predictions_frame
from geoloc_core.locate.store import open_predictor
from geoloc_core.runs.folders import Run

CFG = FinetuneConfig(graph="dt", rounds=2, epochs=3, unfrozen_blocks=1, batch_size=8, device="cpu")


@pytest.fixture
def finetuned_run(tiny_run):
    list(ft.finetune_rounds(tiny_run, CFG))
    return tiny_run


def test_forward_with_a_head_gives_the_plain_forward_and_the_head_on_the_same_pass(tiny_run):
    encoder = load_encoder(*_encoder_args(tiny_run))
    pixels = torch.randn(3, 3, 32, 32)
    calls = []

    class Probe:
        unfrozen_blocks = 1

        def __call__(self, prefix):
            calls.append(prefix.shape)
            return prefix[:, 0, :4]

    pooled, tokens = encoder.forward(pixels)
    pooled2, tokens2, out = encoder.forward_with(pixels, Probe())
    assert torch.allclose(pooled, pooled2, atol=1e-6) and torch.allclose(tokens, tokens2, atol=1e-6)
    assert calls == [(3, 17, 32)] and out.shape == (3, 4)  # the tokens entering the last block: class + 16 patches


def test_predicted_region_is_the_latest_rounds_classifier_as_fine_tuning_graded_it(finetuned_run):
    run = Run(finetuned_run)
    ft_run, r = run.latest_round("dt")
    assert ft_run.root == finetuned_run / "finetune_dt" and r == 2
    predictor = open_predictor(finetuned_run, PredictConfig(device="cpu"), database="train")
    assert predictor.region_head.round == 2 and predictor.regions == ft_run.regions(1)
    assert predictor.region_source == "DT FT2 classifier"

    table = run.photo_table()
    _, is_test = run.read_split()
    held = np.flatnonzero(is_test)
    preds, failed = predict([table.abs_paths()[i] for i in held], predictor)
    assert not failed and len(preds) == len(held)

    # the same classifier on fine-tuning's own (float16-cached) tokens of those photos
    encoder = predictor.encoder
    tokens = ft.cached_prefix_tokens(run, encoder, table, CFG.unfrozen_blocks)
    head = predictor.region_head
    with torch.no_grad():
        expected = head(torch.from_numpy(np.asarray(tokens[held], np.float32))).numpy()
    assert [p.region for p in preds] == expected.argmax(1).tolist()
    assert np.allclose([p.region_prob for p in preds], np.exp(expected.max(1)), atol=1e-2)
    assert predictions_frame(preds)["region_prob"].between(0, 1).all()
    # each says whether the classifier's region holds the predicted point (the region of the nearest database photo
    # there)
    partition = predictor.regions.labels()["region"].to_numpy()
    for p in preds:
        nearest = np.argmin(haversine_km(predictor.db["lat_deg"].to_numpy(), predictor.db["lon_deg"].to_numpy(),
                                         p.lat_deg, p.lon_deg))
        assert p.region_agrees == (p.region == partition[predictor.db["photo"].iat[nearest]])
    # and it is the classifier fine-tuning graded: the FT2 accuracy it recorded, on the regions it learned
    labels = predictor.regions.labels()["region"].to_numpy()[held]
    [record] = [r for r in ft_run.read_metrics() if r["kind"] == "round" and r["round"] == 2]
    assert np.mean([p.region for p in preds] == labels) == pytest.approx(record["acc"], abs=1.01 / len(held))


def test_without_the_head_the_region_is_the_nearest_photos_wo_region(finetuned_run):
    predictor = open_predictor(finetuned_run, PredictConfig(device="cpu", region_from="nearest"))
    assert predictor.region_head is None and predictor.regions == Run(finetuned_run).regions("dt")
    path = predictor.db["path"].iat[3]
    [pred], _ = predict([path], predictor)
    assert pred.region == predictor.db["region"].iat[3] and pred.region_prob is None


def test_a_checkpoint_of_another_encoder_is_refused(finetuned_run):
    ft_run, r = Run(finetuned_run).latest_round("dt")
    state = torch.load(ft_run.round_checkpoint(r), weights_only=True)
    torch.save({**state, "encoder": "someone-else-32px"}, ft_run.round_checkpoint(9))
    assert Run(finetuned_run).latest_round("dt") == (ft_run, 9)
    with pytest.raises(ValueError, match="someone-else"):
        load_region_head(ft_run, 9, load_encoder(*_encoder_args(finetuned_run)))


def _encoder_args(run):
    cfg = Run(run).pipeline_config().embed
    return cfg.model, cfg.checkpoint, cfg.pretrained, "cpu", cfg.image_size
