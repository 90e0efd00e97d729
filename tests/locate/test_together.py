"""Photos of one place located together: grouping (folder, EXIF time, a table) and the joint answer."""

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import ExifTags, Image
from scipy.special import log_softmax

from conftest import textured
from geoloc_core.cli import main
from geoloc_core.config import SOURCES, PredictConfig, PredictorConfig, TogetherConfig
from geoloc_core.locate.build import build_predictor
from geoloc_core.locate.predict import predict, predictions_frame, read_predictions
from geoloc_core.locate.predictor import candidates, joint_log_proba, locate, top_region_mask, vote
from geoloc_core.locate.store import load_predictor, save_predictor
from geoloc_core.locate.together import comparable_times, photo_groups, read_groups, time_groups
from geoloc_core.runs.folders import PredictorStore, Run
from geoloc_core.share.gis import prediction_layers


def jpeg_taken(seed: int, taken: str | None, zone: str | None = None) -> bytes:
    """A real JPEG whose EXIF DateTimeOriginal is `taken` ("YYYY:MM:DD HH:MM:SS"), or none, in the zone
    OffsetTimeOriginal `zone` ("+02:00"), or none."""
    exif = Image.Exif()
    if taken is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[0x9003] = taken
    if zone is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[0x9011] = zone
    buf = io.BytesIO()
    Image.fromarray(textured(seed).astype(np.uint8)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_photos_taken_close_in_time_form_a_place_and_a_gap_starts_the_next():
    t0 = datetime(2026, 5, 1, 10, 0)
    minutes = [0, 4, 30, 9, None, 200, 205, 400]  # out of order: grouped in time order
    labels = time_groups([None if m is None else t0 + timedelta(minutes=m) for m in minutes], gap_min=10)
    first = labels[0]
    # 0, 4, 9: each within 10 min of the one before
    assert labels[1] == labels[3] == first and first.endswith("10:00:00")
    assert labels[2] not in (None, first)  # 30 is 21 min after 9: a place of its own
    assert labels[4] is None  # no time: alone
    assert labels[5] == labels[6] not in (first, labels[2], labels[7])
    assert len(set(time_groups([t0 + timedelta(minutes=m) for m in (0, 4, 9)], gap_min=3))) == 3


def test_times_are_compared_in_utc_where_every_photo_records_its_zone(tmp_path):
    clock = datetime(2026, 5, 1, 10, 0)
    east, west = timedelta(hours=2), timedelta(hours=-5)
    # one camera on Croatian time, one left on New York time, photographing the same square at the same moment
    zoned = comparable_times([(clock, east), (clock - east + west, west), None])
    assert zoned[0] == zoned[1] == (clock - east).replace(tzinfo=UTC) and zoned[2] is None
    assert len(set(time_groups(zoned[:2], gap_min=10))) == 1
    # the same clock times 7 h apart in UTC are two places, which the camera clocks alone would have merged
    assert len(set(time_groups(comparable_times([(clock, east), (clock, west)]), gap_min=10))) == 2
    # where one photo has no zone, the clocks are all there is to compare
    assert comparable_times([(clock, east), (clock, None)]) == [clock, clock]
    # read from the photos' EXIF: the same moment on two clocks is one place, labelled in UTC
    paths = [tmp_path / "split.jpg", tmp_path / "nyc.jpg", tmp_path / "later.jpg"]
    for i, (path, taken, zone) in enumerate(zip(paths,
                                                ("2026:05:01 10:00:00", "2026:05:01 03:02:00", "2026:05:01 10:02:00"),
                                                ("+02:00", "-05:00", "-05:00"))):
        path.write_bytes(jpeg_taken(i, taken, zone))
    labels = photo_groups(paths, TogetherConfig("time", gap_min=10))
    assert labels[0] == labels[1] == "taken from 2026-05-01 08:00:00 UTC" and labels[2] not in (None, labels[0])


def test_groups_come_from_folders_the_whole_batch_exif_time_or_a_table(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "1.jpg", tmp_path / "a" / "2.jpg", tmp_path / "b" / "3.jpg"]
    for i, (p, taken) in enumerate(zip(paths, ("2026:05:01 10:00:00", "2026:05:01 10:05:00", None))):
        p.write_bytes(jpeg_taken(i, taken))
    assert photo_groups(paths, TogetherConfig("none")) == [None] * 3
    assert photo_groups(paths, TogetherConfig("all")) == ["all"] * 3
    assert photo_groups(paths, TogetherConfig("folder")) == [str(tmp_path / "a")] * 2 + [str(tmp_path / "b")]
    by_time = photo_groups(paths, TogetherConfig("time", gap_min=10))
    assert by_time[0] == by_time[1] is not None and by_time[2] is None  # 3.jpg has no time
    assert (photo_groups(paths, TogetherConfig("time", gap_min=1))[0]
            != photo_groups(paths, TogetherConfig("time", gap_min=1))[1])
    with pytest.raises(ValueError, match="positive"):
        photo_groups(paths, TogetherConfig("time", gap_min=0))
    table = tmp_path / "groups.csv"
    pd.DataFrame({"path": ["a/1.jpg", str(paths[2]), "a/2.jpg"],
                  "group": ["square", "square", ""]}).to_csv(table, index=False)
    assert read_groups(table, paths) == ["square", None, "square"]  # relative to the table's folder; empty: alone
    pd.DataFrame({"path": ["elsewhere/1.jpg"], "group": ["x"]}).to_csv(table, index=False)
    # a table naming none of the photos is a mistake, not "all alone"
    with pytest.raises(ValueError, match="none of its 1 paths"):
        read_groups(table, paths)
    pd.DataFrame({"file": ["a/1.jpg"]}).to_csv(table, index=False)
    with pytest.raises(ValueError, match="path and group"):
        read_groups(table, paths)


@pytest.mark.parametrize("region_weight", [0.0, 1.0])
def test_a_group_gets_the_candidate_its_photos_score_highest_together(tiny_run, region_weight):
    predictor = build_predictor(tiny_run, PredictorConfig(k=5, region_weight=region_weight))
    emb = Run(tiny_run).read_embeddings()[0]
    rows = np.array([0, 3, 17, 30, 31])
    together = np.array(["x", "x", "x", None, "y"], dtype=object)  # None and "y" are alone
    lat, lon, sims, ids = locate(predictor, emb[rows], emb[rows], together)
    s_lat, s_lon, s_sims, s_ids = locate(predictor, emb[rows], emb[rows])
    assert np.array_equal(ids, s_ids) and np.array_equal(sims, s_sims)  # each photo keeps its own neighbours
    assert np.array_equal(lat[3:], s_lat[3:]) and np.array_equal(lon[3:], s_lon[3:])  # alone: as if located alone
    x = rows[:3]
    c_lat, c_lon = (c.ravel() for c in candidates(predictor, emb[x], sims[:3], ids[:3]))
    cosines = predictor.verifier.scores(emb[x], np.tile(c_lat, (3, 1)), np.tile(c_lon, (3, 1)))
    logits = cosines * float(predictor.verifier.log_scale.detach().exp().clamp(max=100))
    # each photo's own log p(region), once: the sum is the log of the product of the photos' probabilities
    if region_weight:
        cls = predictor.region_class_at(c_lat, c_lon)
        # every candidate's region known to the probe (an unknown one counts as the least likely)
        assert (cls >= 0).all()
        logits += region_weight * predictor.region_probe.log_proba(emb[x])[:, cls]
    best = np.argmax(logits.sum(0))
    assert np.allclose(lat[:3], c_lat[best]) and np.allclose(lon[:3], c_lon[best])  # one answer, the best summed logit
    no_verifier = build_predictor(tiny_run, PredictorConfig(k=5, verify=False))
    v_lat, v_lon, v_sims, v_ids = locate(no_verifier, emb[rows], emb[rows], together)
    n_lat, n_lon = no_verifier.db["lat_deg"].to_numpy()[v_ids[:3]], no_verifier.db["lon_deg"].to_numpy()[v_ids[:3]]
    g_lat, g_lon = vote(v_sims[:3].reshape(1, -1), n_lat.reshape(1, -1), n_lon.reshape(1, -1), no_verifier.bandwidth_km)
    assert np.allclose(v_lat[:3], g_lat[0]) and np.allclose(v_lon[:3], g_lon[0])  # the vote over the pooled neighbours
    with pytest.raises(ValueError, match="2 group labels for 5 photos"):
        locate(predictor, emb[rows], emb[rows], together[:2])


def test_a_group_keeps_to_its_joint_top_region(tiny_run):
    predictor = build_predictor(tiny_run, PredictorConfig(k=5, sources=SOURCES, top_regions=1))
    emb = Run(tiny_run).read_embeddings()[0]
    rows = np.array([0, 1, 12, 25])  # photos of different places, told they are one
    together = np.array(["x"] * 4, dtype=object)
    joint = joint_log_proba(predictor.region_probe.log_proba(emb[rows]), together)
    lat, lon, _, ids = locate(predictor, emb[rows], emb[rows], together)
    assert len(set(zip(lat, lon))) == 1
    top = top_region_mask(joint, 1)
    # every photo searched within the group's region
    assert np.take_along_axis(top, predictor._db_region_class[ids], 1).all()
    where = predictor.region_class_at(lat[:1], lon[:1])[0]
    assert where >= 0 and top[0, where]  # and the answer lies in it


def test_the_joint_region_probabilities_are_the_product_of_the_photos():
    rng = np.random.default_rng(0)
    log_p = log_softmax(rng.normal(size=(4, 3)), axis=1)
    joint = joint_log_proba(log_p, [1, None, 1, None])
    assert np.allclose(joint[0], log_softmax(log_p[0] + log_p[2])) and np.allclose(joint[0], joint[2])
    assert np.allclose(joint[[1, 3]], log_p[[1, 3]]) and np.allclose(np.exp(joint).sum(1), 1)


def test_predicting_a_group_gives_its_readable_photos_one_answer_and_says_so(tiny_run, tmp_path):
    # with the hierarchy: the joint region prior
    built = build_predictor(tiny_run, PredictorConfig(k=5, region_weight=1.0))
    store = PredictorStore(tmp_path / "store")
    save_predictor(built, store)
    predictor = load_predictor(store, tiny_run, PredictConfig(device="cpu", region_from="nearest"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    paths = [predictor.db["path"].iat[i] for i in (0, 9, 25)] + [broken]
    preds, failed = predict(paths, predictor, groups=["g", "g", "h", "h"])
    assert list(failed) == [str(broken)]
    assert [p.group for p in preds] == ["g", "g", None]  # h lost its other photo: located alone
    assert (preds[0].lat_deg, preds[0].lon_deg) == (preds[1].lat_deg, preds[1].lon_deg)
    alone, _ = predict(paths[2:3], predictor)
    assert (preds[2].lat_deg, preds[2].lon_deg) == pytest.approx((alone[0].lat_deg, alone[0].lon_deg))
    frame = predictions_frame(preds)
    assert frame["group"].tolist()[:2] == ["g", "g"] and pd.isna(frame["group"].iat[2])


def test_cli_predict_locates_a_groups_table_together(tiny_run, tmp_path, capsys):
    photos = sorted(Run(tiny_run).photo_table().abs_paths())[:3]
    table = tmp_path / "groups.csv"
    pd.DataFrame({"path": [str(p) for p in photos[:2]], "group": ["corner", "corner"]}).to_csv(table, index=False)
    out = tmp_path / "out"
    assert main(["predict", *map(str, photos), "--run", str(tiny_run), "--groups", str(table), "--out", str(out),
                 "--device", "cpu"]) == 0
    frame = pd.read_csv(out / "predictions.csv")
    assert frame["group"].tolist()[:2] == ["corner", "corner"] and pd.isna(frame["group"].iat[2])
    assert frame["lat_deg"].iat[0] == frame["lat_deg"].iat[1]
    assert "located together as corner" in capsys.readouterr().out
    assert main(["predict", *map(str, photos), "--run", str(tiny_run), "--groups", str(table), "--together", "all",
                 "--out", str(out), "--device", "cpu"]) != 0  # two ways of naming the places: refused, not one ignored
    assert main(["predict", *map(str, photos), "--run", str(tiny_run), "--together", "all", "--out", str(out),
                 "--device", "cpu"]) == 0
    frame = pd.read_csv(out / "predictions.csv")
    assert frame["group"].eq("all").all() and "3 photos located together as 1 place(s)" in capsys.readouterr().out
    assert prediction_layers(frame)["predictions"]["group"].eq("all").all()  # the GIS exports say so too
    pd.DataFrame({"path": [str(p) for p in photos[:2]], "group": ["7", "7"]}).to_csv(table, index=False)
    assert main(["predict", *map(str, photos), "--run", str(tiny_run), "--groups", str(table), "--out", str(out),
                 "--device", "cpu"]) == 0
    back = read_predictions(out / "predictions.csv")  # a group named "7" comes back as the text "7", in every export
    assert (back["group"].tolist()[:2] == ["7", "7"] and prediction_layers(back)["predictions"]["group"].tolist()
            == ["7", "7", ""])
