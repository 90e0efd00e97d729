"""Splits and spatial blocks: the units held out together."""

import numpy as np
import pandas as pd
import pytest

from geoloc_core.base.geo import LocalProjection
from geoloc_core.evaluate.splits import block_labels, fold_units, grouped_split
from geoloc_core.evaluate.stats import location_folds


def test_block_labels_exact_on_a_small_case():
    xy_m = np.array([[0, 0], [999, 999], [1000, 0], [2500, 0], [0, 1000], [2999, 1999], [100, 1500]], float)
    # 3 columns (x 0..2999 m in 1 km blocks), rows from the south-west corner: label = column + 3 * row
    assert block_labels(xy_m, 1.0).tolist() == [0, 0, 1, 2, 3, 5, 3]
    # aligned on the points, not the origin
    assert block_labels(xy_m + [5e5, -7e5], 1.0).tolist() == [0, 0, 1, 2, 3, 5, 3]
    assert block_labels(xy_m, 10.0).tolist() == [0] * 7
    with pytest.raises(ValueError):
        block_labels(xy_m, 0.0)


def test_fold_units_keep_places_whole_and_default_to_places():
    lat = np.array([45.0, 45.0, 45.2, 45.2001, 45.9])
    lon = np.array([15.0, 15.0, 15.1, 15.1001, 16.0])
    groups = np.array(["a", "a", "b", "c", "d"])
    assert fold_units(groups, lat, lon).tolist() == groups.tolist()
    units = fold_units(groups, lat, lon, block_km=50.0)
    assert units[0] == units[1] == units[2] == units[3] != units[4]  # b and c (10 m apart) share a's 50 km block
    xy = LocalProjection.centred_on(lat, lon).to_xy_m(lat, lon)
    assert len(set(units)) == len(set(block_labels(xy, 50.0)))


def test_folds_over_blocks_hold_whole_blocks_out(manifest_folder):
    # 20 real JPEG locations over two 1 x 1 degree halves of Croatia
    frame = pd.read_csv(manifest_folder / "manifest.csv")
    lat, lon, groups = frame["lat"].to_numpy(), frame["lon"].to_numpy(), frame["location_id"].to_numpy()
    units = fold_units(groups, lat, lon, block_km=40.0)
    assert 2 < len(set(units)) < len(set(groups))  # coarser than places, finer than everything
    fold = location_folds(units, 3, seed=0)
    for unit in set(units):
        assert len(set(fold[units == unit])) == 1  # a block lies in one fold
    for g in set(groups):
        assert len(set(fold[groups == g])) == 1  # and so does each place
    assert sorted(set(fold)) == [0, 1, 2]
    by_place = location_folds(fold_units(groups, lat, lon), 3, seed=0)
    assert not np.array_equal(fold, by_place)


def test_grouped_split_keeps_groups_whole():
    groups = np.repeat(np.arange(10), 3)
    is_test = grouped_split(groups, 0.3, seed=2)
    assert all(len(set(is_test[groups == g])) == 1 for g in range(10)) and is_test.sum() == 9
