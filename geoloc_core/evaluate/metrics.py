"""Metrics as flat dicts with stable keys: `acc`, `macro_f1`, `median_km`, `acc@25km`, ...

Distance accuracies count a prediction as within t km when its great-circle error is <= t (the
convention of the Im2GPS / GeoCLIP evaluation code). The 0.1 and 0.5 km thresholds are there for
campus-scale data, where 1 km already covers everything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from geoloc_core.base.geo import haversine_km
from geoloc_core.regions.partition import region_table

THRESHOLDS_KM = (0.1, 0.5, 1.0, 25.0, 200.0, 750.0, 2500.0)
RECALL_KS = (1, 5, 10)


def threshold_key(km: float) -> str:
    """The metric name of accuracy within `km` kilometres, e.g. `acc@25km`."""
    return f"acc@{km:g}km"


def distance_metrics(pred_lat_deg, pred_lon_deg, true_lat_deg, true_lon_deg,
                     thresholds_km: tuple[float, ...] = THRESHOLDS_KM) -> dict[str, float]:
    """Median / mean error in km and the share of predictions within each threshold (<=)."""
    err = haversine_km(pred_lat_deg, pred_lon_deg, true_lat_deg, true_lon_deg)
    out = {"median_km": float(np.median(err)), "mean_km": float(np.mean(err))}
    out |= {threshold_key(t): float(np.mean(err <= t)) for t in thresholds_km}
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over the regions present in truth or prediction), as in the paper's Table 1."""
    return {"acc": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def centroid_errors(pred: np.ndarray, train_labels: np.ndarray, train_lat_deg: np.ndarray, train_lon_deg: np.ndarray,
                    true_lat_deg: np.ndarray, true_lon_deg: np.ndarray) -> dict[str, float]:
    """distance_metrics of predicting each photo at the centroid of its predicted region's training photos."""
    lat_c, lon_c = region_centroids(train_labels, train_lat_deg, train_lon_deg)
    return distance_metrics(lat_c[pred], lon_c[pred], true_lat_deg, true_lon_deg)


def region_centroids(train_labels: np.ndarray, train_lat_deg: np.ndarray,
                     train_lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R,) latitude and longitude of each region's training photos' centroid."""
    summary = region_table(train_labels, train_lat_deg, train_lon_deg)
    return summary["lat_deg"].to_numpy(), summary["lon_deg"].to_numpy()


def recall_hits(ids: np.ndarray, db_lat_deg: np.ndarray, db_lon_deg: np.ndarray, true_lat_deg: np.ndarray,
                true_lon_deg: np.ndarray, radius_km: float) -> np.ndarray:
    """(Q, k) bool: whether a database photo within `radius_km` (<=) of each query is among its top 1 .. k (`ids`)."""
    d = haversine_km(db_lat_deg[ids], db_lon_deg[ids], true_lat_deg[:, None], true_lon_deg[:, None])
    return np.cumsum(d <= radius_km, axis=1) > 0


def recall_columns(hits: np.ndarray, ks: tuple[int, ...] = RECALL_KS) -> dict[str, np.ndarray]:
    """`R@K` -> (Q,) bool per query, from `recall_hits` (K past the retrieved top k: the top k)."""
    return {f"R@{k}": hits[:, min(k, hits.shape[1]) - 1] for k in ks}


def recall_at_k(ids: np.ndarray, db_lat_deg: np.ndarray, db_lon_deg: np.ndarray, true_lat_deg: np.ndarray,
                true_lon_deg: np.ndarray, radius_km: float = 0.025,
                ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Share of queries with a database photo within `radius_km` (<=) among their top K: `R@K` (VPR's 25 m default)."""
    hits = recall_hits(ids, db_lat_deg, db_lon_deg, true_lat_deg, true_lon_deg, radius_km)
    return {name: float(hit.mean()) for name, hit in recall_columns(hits, ks).items()}


def chance_metrics(labels: np.ndarray, is_test: np.ndarray) -> dict[str, float]:
    """What a partition's region sizes alone score on the held-out photos: `chance_acc`, a classifier that guesses
    with the training frequencies (a random partition of the same sizes is learnt no better), and `majority_acc`,
    always the largest training region. Fewer, larger regions make both, and plain accuracy, easy."""
    n = int(labels.max()) + 1
    train_freq = np.bincount(labels[~is_test], minlength=n) / max(1, int((~is_test).sum()))
    test_freq = np.bincount(labels[is_test], minlength=n) / max(1, int(is_test.sum()))
    return {"chance_acc": float(train_freq @ test_freq), "majority_acc": float(test_freq[np.argmax(train_freq)])}


def region_metrics(pred_test: np.ndarray, labels: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray,
                   is_test: np.ndarray) -> dict[str, float]:
    """How a region classifier does on the held-out photos: accuracy, macro-F1, and the km errors of
    answering the predicted region's centroid (from its training photos)."""
    train = ~is_test
    return classification_metrics(labels[is_test], pred_test) | centroid_errors(
        pred_test, labels[train], lat_deg[train], lon_deg[train], lat_deg[is_test], lon_deg[is_test])


def held_out_answers(pred_test: np.ndarray, labels: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray,
                     is_test: np.ndarray) -> pd.DataFrame:
    """Each held-out photo's answer (photo, region, pred, error_km: to its predicted region's training centroid), the
    rows that intervals resample and that `confusion` counts."""
    train, test = ~is_test, np.flatnonzero(is_test)
    lat_c, lon_c = region_centroids(labels[train], lat_deg[train], lon_deg[train])
    return pd.DataFrame({"photo": test, "region": labels[test], "pred": pred_test,
                         "error_km": haversine_km(lat_c[pred_test], lon_c[pred_test], lat_deg[test], lon_deg[test])})


def confusion(answers: pd.DataFrame, n_regions: int) -> np.ndarray:
    """(R, R) int64 counts of held-out answers (`region`: truth, row; `pred`: column); they sum to the answers' rows."""
    matrix = np.zeros((n_regions, n_regions), np.int64)
    np.add.at(matrix, (answers["region"].to_numpy(int), answers["pred"].to_numpy(int)), 1)
    return matrix


def region_accuracy(matrix: np.ndarray) -> np.ndarray:
    """(R,) share of each region's held-out photos classified into it (nan for a region without held-out photos)."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def confused_pairs(matrix: np.ndarray) -> pd.DataFrame:
    """The off-diagonal cells with any count: true region, predicted region, count, share of the true region's photos;
    most frequent first (ties: lower regions first)."""
    truth, pred = np.nonzero(matrix * (1 - np.eye(len(matrix), dtype=np.int64)))
    counts = matrix[truth, pred]
    share = counts / matrix.sum(axis=1)[truth]
    order = np.lexsort((pred, truth, -counts))
    return pd.DataFrame({"region": truth[order], "pred": pred[order], "count": counts[order], "share": share[order]})
