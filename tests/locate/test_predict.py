import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from geoloc_core.analysis.compare import compare_methods
from geoloc_core.base.geo import haversine_km
from geoloc_core.cli import main
from geoloc_core.config import SOURCES, CompareConfig, CrossValConfig, PredictConfig, PredictorConfig, RegionConfig
from geoloc_core.evaluate.metrics import recall_at_k
from geoloc_core.locate.build import build_predictor
from geoloc_core.locate.predict import predict, predictions_frame, predictions_geojson, read_predictions
from geoloc_core.locate.predictor import candidates, locate, vote
from geoloc_core.locate.store import load_predictor, open_predictor, predictor_store, save_predictor
from geoloc_core.runs import stages
from geoloc_core.runs.folders import PredictorStore, Run
from geoloc_core.runs.provenance import Stale

CPU = PredictConfig(device="cpu")


def test_vote_prefers_a_group_of_agreeing_neighbours_over_one_strong_outlier():
    sims = np.array([[0.9, 0.8, 0.8, 0.8]])
    lat = np.array([[10.0, 45.0, 45.001, 45.002]])
    lon = np.array([[10.0, 16.0, 16.001, 16.002]])
    top1 = vote(sims, lat, lon, 0.0)
    grouped = vote(sims, lat, lon, 1.0)
    assert top1[0][0] == pytest.approx(10.0) and grouped[0][0] == pytest.approx(45.001, abs=1e-4)


def test_recall_at_k_by_hand():
    db_lat, db_lon = np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0002, 1.0])  # 0.0002° lon ~ 22 m
    ids = np.array([[2, 1, 0], [2, 2, 2]])
    r = recall_at_k(ids, db_lat, db_lon, np.array([0.0, 0.0]), np.array([0.0, 0.0]), radius_km=0.025, ks=(1, 2, 3))
    assert r == {"R@1": 0.0, "R@2": 0.5, "R@3": 0.5}


def test_predicting_database_photos_finds_themselves_and_reports_exif_truth(tiny_run, exif_folder, tmp_path):
    predictor = build_predictor(tiny_run, PredictorConfig(k=5))
    assert predictor.radius_km > 0 and predictor.bandwidth_km >= 0 and len(predictor.db) == 40
    # cross-fitted: every database photo located by a calibrator without its place
    errors = predictor.calibration_errors_km
    assert len(errors) == 40 and np.isfinite(errors).all()
    assert predictor.radius_km == np.sort(errors)[36]  # conformal: the ceil(41 x 0.9) = 37th smallest of 40
    save_predictor(predictor, PredictorStore(tmp_path / "pred"))
    loaded = load_predictor(PredictorStore(tmp_path / "pred"), tiny_run, CPU)
    assert loaded.verifier is not None and loaded.sources == predictor.sources
    probe = predictor.db[["lat_deg", "lon_deg"]].to_numpy()[:3]
    assert np.allclose(loaded.verifier.gps_codes(*probe.T), predictor.verifier.gps_codes(*probe.T), atol=1e-6)
    db_paths = [loaded.db["path"].iat[i] for i in (0, 7)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    gps_photo = sorted(exif_folder.glob("*.jpg"))[0]
    preds, failed = predict([*db_paths, broken, gps_photo], loaded)
    assert list(failed) == [str(broken)] and "not an image" in failed[str(broken)]
    for p, path in zip(preds[:2], db_paths):
        assert p.neighbours[0].path == path and p.neighbours[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert p.true_lat_deg is None and p.region is not None
    exif = preds[2]
    assert exif.true_lat_deg is not None and exif.error_km > 1  # truth shown, not used: Zagreb is far from the db
    assert all(n.dist_km >= 0 for n in exif.neighbours) and len(exif.neighbours) == 5


def test_cli_predict_writes_csv_and_geojson(tiny_run, exif_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(exif_folder), "--run", str(tiny_run), "--out", str(out), "--k", "3", "--device",
                 "cpu"]) == 0
    frame = pd.read_csv(out / "predictions.csv")
    assert len(frame) == 24 and frame["error_km"].notna().all()
    assert len(json.loads(frame["neighbours"][0])) == 3
    geo = json.loads((out / "predictions.geojson").read_text())
    assert len(geo["features"]) == 24 and geo["features"][0]["geometry"]["type"] == "Point"
    assert "EXIF truth" in capsys.readouterr().out


def test_candidates_come_from_each_source_and_the_verifier_picks_one_of_them(tiny_run):
    predictor = build_predictor(tiny_run, PredictorConfig(k=5, sources=SOURCES))
    emb = Run(tiny_run).read_embeddings()[0][:6]
    sims, ids = predictor.index.search(emb, 5)
    n_regions = len(predictor.region_centroids[0])
    widths = {"top1": 1, "clusters": 5, "gallery": min(10, len(predictor.sites)), "regions": n_regions, "regression": 1}
    for source in SOURCES:
        c_lat, c_lon = candidates(predictor.with_sources((source,)), emb, sims, ids)
        assert c_lat.shape == c_lon.shape == (6, widths[source]), source
    c_lat, c_lon = candidates(predictor.with_sources(SOURCES), emb, sims, ids)
    assert c_lat.shape[1] == sum(widths.values())
    assert np.allclose(np.column_stack(predictor.regressor.predict(emb)), np.column_stack([c_lat[:, -1], c_lon[:, -1]]))
    # the verifier's only candidate: the regression's answer
    alone = locate(predictor.with_sources(("regression",)), emb, emb)
    assert np.allclose(alone[0], predictor.regressor.predict(emb)[0])
    assert (PredictorConfig().sources == ("top1", "clusters", "gallery")
            and build_predictor(tiny_run, PredictorConfig(k=5)).regressor is None)
    top1 = predictor.db["lat_deg"].to_numpy()[ids[:, 0]]
    assert np.allclose(locate(predictor.with_sources(("top1",)), emb, emb)[0], top1)


def test_compare_table_has_every_method_on_one_split(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path):
    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--patches", "--test-frac", "0.25", "--model",
                 TINY.name, "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--graphs", "dt"]) == 0
    result = compare_methods(run, CompareConfig(), PredictorConfig(k=5))
    rows, predictions = result.rows, result.predictions
    assert not result.verdicts and not result.folds  # one split: point figures
    assert len(predictions) == 10 and (predictions["error_km"] >= 0).all()  # 5 of 20 locations held out, 2 photos each
    methods = [r["method"] for r in rows]
    assert methods[:6] == ["kNN-CLS top-1", "kNN-CLS vote", "kNN-GEM top-1", "kNN-GEM vote", "kNN-VLAD top-1",
                           "kNN-VLAD vote"]
    assert methods[6:8] == ["region centroid (DT w/o)", "regression (lat/lon MLP)"]
    assert "verified: top1+clusters+gallery" in methods and "verified: regions" in methods
    assert all({"median_km", "acc@25km", "acc@2500km"} <= set(r) for r in rows)
    retrieval = [r for r in rows if "R@1" in r]
    assert all(r["R@1"] <= r["R@5"] <= r["R@10"] for r in retrieval)
    # the whole data set spans ~200 km: every method lands within 2500 km
    assert all(r["acc@2500km"] == 1.0 for r in rows)
    assert all(r["acc@1km"] <= r["acc@25km"] <= r["acc@200km"] for r in rows)


@pytest.mark.slow  # every method, K times
def test_k_fold_compare_holds_out_every_location_once_and_gives_intervals_and_verdicts(tiny_run):
    result = compare_methods(tiny_run, CompareConfig(descriptors=("cls",)), PredictorConfig(k=5),
                             cv=CrossValConfig(folds=4))
    photos = Run(tiny_run).photo_table().frame
    assert sorted(result.predictions["path"]) == sorted(photos["path"])  # every photo held out exactly once
    assert [f["fold"] for f in result.folds] == [0, 1, 2, 3] and sum(f["n_locations"] for f in result.folds) == 20
    assert all(0 <= f["within_radius"] <= 1 for f in result.folds)
    for row in result.rows:
        assert row["median_km_lo"] <= row["median_km"] <= row["median_km_hi"], row["method"]
        assert row["acc@2500km_lo"] == row["acc@2500km"] == 1.0
        # no method ever sees the held-out location itself: its own photos never come back as neighbours
        assert row.get("R@1", 0.0) == 0.0
    methods = {r["method"] for r in result.rows}
    assert {"kNN-CLS vote", "region centroid (DT w/o)", "regression (lat/lon MLP)",
            "verified: top1+clusters+gallery"} <= methods
    compared = {(v["comparison"].split(" vs ")[1], v["metric"]) for v in result.verdicts}
    assert ("kNN-CLS vote", "median_km") in compared and ("verified: top1+clusters", "median_km") in compared
    assert all(v["lo"] <= v["difference"] <= v["hi"] and v["verdict"] in ("better", "worse", "no detectable difference")
               for v in result.verdicts)


def test_saved_predictor_is_reused_until_the_run_is_re_embedded(tiny_run):
    first = open_predictor(tiny_run, CPU)
    store = predictor_store(tiny_run, PredictorConfig(), "all", "dt")
    record, built = store.record.read_text(), store.index.stat().st_mtime_ns
    open_predictor(tiny_run, CPU)
    assert store.index.stat().st_mtime_ns == built  # loaded, not rebuilt
    os.utime(Run(tiny_run).embeddings)  # touched, not changed: the contents decide
    open_predictor(tiny_run, CPU)
    assert (store.index.stat().st_mtime_ns == built and json.loads(store.record.read_text())["digest"]
            == json.loads(record)["digest"])
    run = Run(tiny_run)
    stages.run_embed(tiny_run, dataclasses.replace(run.pipeline_config().embed, patches=True))  # embedded again
    stages.cut_regions(tiny_run, run.pipeline_config().regions)  # the regions it weighs, cut again from them
    again = open_predictor(tiny_run, CPU)
    assert json.loads(store.record.read_text())["digest"] != json.loads(record)["digest"]
    assert first.verifier is not None and again.verifier is not None
    emb = np.load(run.embeddings)
    np.save(run.embeddings, emb[::-1].copy())  # replaced behind its record: no longer traceable, so refused
    with pytest.raises(Stale, match="embeddings.npy was changed after it was recorded"):
        open_predictor(tiny_run, CPU)


def test_a_build_setting_rebuilds_the_saved_predictor_and_coverage_sets_the_radius(tiny_run, exif_folder, capsys):
    """`--k` and `--coverage` were ignored once a predictor had been saved: the old radius came back."""
    photo = str(sorted(exif_folder.glob("*.jpg"))[0])
    radius = {}
    for coverage in ("0.9", "0.5"):
        assert main(["predict", photo, "--run", str(tiny_run), "--coverage", coverage, "--device", "cpu",
                     "--out", str(tiny_run.parent / "p")]) == 0
        radius[coverage] = float(capsys.readouterr().out.split("±")[1].split(" km")[0])
    assert radius["0.5"] < radius["0.9"]
    assert json.loads(predictor_store(tiny_run, PredictorConfig(), "all", "dt").meta.read_text())["config"]["k"] == 10
    assert main(["predict", photo, "--run", str(tiny_run), "--k", "3", "--device", "cpu", "--out",
                 str(tiny_run.parent / "p")]) == 0
    # built for it
    assert json.loads(predictor_store(tiny_run, PredictorConfig(k=3), "all", "dt").meta.read_text())["config"]["k"] == 3
    assert (pd.read_csv(tiny_run.parent / "p" / "predictions.csv")["neighbours"].map(lambda n: len(json.loads(n)))
            .tolist() == [3])


def test_re_cutting_regions_changes_the_region_the_next_prediction_reports(tiny_run):
    """The saved predictor copied the w/o labels and was not rebuilt by `geoloc regions`: its regions went stale."""
    cfg = PredictConfig(device="cpu", region_from="nearest")
    db_photo = Run(tiny_run).photo_table().abs_paths()[0]
    before = predict([db_photo], open_predictor(tiny_run, cfg))[0][0].region
    stages.cut_regions(tiny_run, RegionConfig(resolution=30.0), ("dt",))  # many more, smaller regions
    labels = Run(tiny_run).regions("dt").labels()["region"].to_numpy()
    after = predict([db_photo], open_predictor(tiny_run, cfg))[0][0]
    assert after.region == labels[0]  # the photo's own location: its region in the new cut
    assert labels[0] != before  # (the new cut numbers this photo's region differently)


def test_familiarity_is_calibrated_on_the_database_alone(tiny_run):
    predictor = build_predictor(tiny_run, PredictorConfig(k=5))
    reference = predictor.familiar_sims  # leave-location-out top-1 similarities of the database's own photos
    assert len(reference) == 40 and np.all(np.diff(reference) >= 0)
    assert (predictor.familiarity(np.array([-1.0, np.median(reference), 1.0])).tolist()
            == pytest.approx([0.0, 0.5, 1.0], abs=0.03))
    # a photo as unlike the database as its least familiar own photo, or less, is flagged at a 5 % threshold
    assert predictor.familiarity(np.array([reference[0] - 1e-6]))[0] < 0.05


def test_predictions_carry_familiarity_and_a_flag_in_the_exports(tiny_run, tmp_path):
    predictor = open_predictor(tiny_run, PredictConfig(device="cpu", unfamiliar_below=0.5))
    db_photo = Path(predictor.db["path"].iat[0])
    [own], _ = predict([db_photo], predictor)
    assert own.familiarity == 1.0 and not own.unfamiliar  # itself: as familiar as a photo gets
    frame = predictions_frame([own])
    assert {"familiarity", "unfamiliar", "region_agrees"} <= set(frame.columns)
    strict = open_predictor(tiny_run, PredictConfig(device="cpu", unfamiliar_below=1.01))
    [flagged], _ = predict([db_photo], strict)
    assert flagged.unfamiliar and flagged.familiarity == own.familiarity  # the threshold is a query-time setting


def test_a_predictor_saved_without_a_verifier_loads_without_one(tiny_run, tmp_path):
    """A verifier file left by an earlier build must not come back into a predictor built with --no-verify."""
    store = PredictorStore(tmp_path / "pred")
    save_predictor(build_predictor(tiny_run, PredictorConfig(k=5)), store)
    assert load_predictor(store, tiny_run, CPU).verifier is not None
    save_predictor(build_predictor(tiny_run, PredictorConfig(k=5, verify=False)), store)
    assert not store.verifier.exists() and load_predictor(store, tiny_run, CPU).verifier is None
    assert open_predictor(tiny_run,
                          PredictConfig(device="cpu", predictor=PredictorConfig(verify=False))).verifier is None


@pytest.mark.slow  # every method, K times
@pytest.mark.parametrize("folds", [1, 3])
def test_compare_follows_the_configured_sources(tiny_run, folds):
    """The reference row, its error map and its verdicts are the verified predictor as configured, not the default's."""
    cfg = PredictorConfig(k=5, sources=("top1", "clusters"))
    result = compare_methods(tiny_run, CompareConfig(descriptors=("cls",)), cfg, cv=CrossValConfig(folds=folds))
    [reference] = [r for r in result.rows if r["method"] == "verified: top1+clusters"]
    # with folds: one radius per fold
    assert "within_radius" in reference and ("radius_km@90" in reference or folds > 1)
    rows = {r["method"]: r for r in result.rows}
    errors = haversine_km(result.predictions["lat_deg"], result.predictions["lon_deg"],
                          result.predictions["true_lat_deg"], result.predictions["true_lon_deg"])
    assert np.median(errors) == pytest.approx(rows["verified: top1+clusters"]["median_km"])
    if folds > 1:
        assert {v["comparison"] for v in result.verdicts} == {"verified: top1+clusters vs kNN-CLS vote",
                                                             "verified: top1+clusters vs verified: clusters",
                                                             "verified: top1+clusters vs verified: top1"}


def test_a_photo_s_familiarity_is_its_best_match_among_the_database_photos(tiny_run):
    """Prediction and calibration must compare like with like: the photo's cosine to its nearest database photo."""
    predictor = open_predictor(tiny_run, PredictConfig(device="cpu"), database="train")
    run = Run(tiny_run)
    emb, _ = run.read_embeddings()
    _, is_test = run.read_split()
    held = np.flatnonzero(is_test)[:3]
    preds, _ = predict([run.photo_table().abs_paths()[i] for i in held], predictor)
    best = (emb[held] @ emb[~is_test].T).max(axis=1)
    assert [p.familiarity for p in preds] == pytest.approx(predictor.familiarity(best).tolist())


def test_a_predictor_that_depends_on_the_graph_is_saved_per_graph(tmp_path):
    """Its regions or fine-tuning differ per graph: alternating graphs reload each one's predictor,
    never rebuild one store."""
    for cfg in (PredictorConfig(ft_round=1), PredictorConfig(region_weight=1.0),
                PredictorConfig(sources=("top1", "regions"))):
        assert predictor_store(tmp_path, cfg, "all", "dt").root != predictor_store(tmp_path, cfg, "all", "gg").root
    plain = PredictorConfig(region_weight=0.0)  # no regions, no fine-tuning: one store whatever the graph
    assert predictor_store(tmp_path, plain, "all", "dt").root == predictor_store(tmp_path, plain, "all", "gg").root


def test_a_prediction_its_neighbours_and_its_region_are_named_by_their_nearest_towns(tiny_run, tmp_path, capsys):
    """Location L15 of the tiny set (45.5161 N, 16.6159 E) lies in Osekovo: the photo's own neighbour (itself) is named
    so in the prediction, its exports and the CLI's line; an older predictions file is named when read back."""
    predictor = open_predictor(tiny_run, CPU)
    photo = Path(predictor.db["path"][predictor.db["path"].str.endswith("l15_0.jpg")].iat[0])
    [p], _ = predict([photo], predictor)
    osekovo = "near Osekovo, Sisacko-Moslavacka, HR (under 0.1 km)"
    assert p.neighbours[0].path == str(photo) and p.neighbours[0].place == osekovo
    assert (p.lat_deg, p.lon_deg) == pytest.approx((45.5161, 16.6159), abs=1e-4) and p.place == osekovo
    assert p.place_km == pytest.approx(0.072, abs=0.001)
    frame = predictions_frame([p])
    assert frame["place"].tolist() == [osekovo] and json.loads(frame["neighbours"].iat[0])[0]["place"] == osekovo
    assert json.loads(predictions_geojson([p]))["features"][0]["properties"]["place"] == osekovo
    older = tmp_path / "older.csv"
    frame.drop(columns=["place", "place_km"]).to_csv(older, index=False)
    assert read_predictions(older)["place"].tolist() == [osekovo]
    assert main(["predict", str(photo), "--run", str(tiny_run), "--out", str(tmp_path / "out"), "--device",
                 "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{photo}: 45.51607, 16.61587 {osekovo} (±" in out
    assert f"  region {p.region}: " in out and "Osekovo (HR)" in out  # the region's towns
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["place"].tolist() == [osekovo]
