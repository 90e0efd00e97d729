"""A linear probe on frozen embeddings: the region classifier of the "w/o" (no fine-tuning) rows.

Its strength is chosen by grouped cross-validation on the training photos alone, so the test
locations never tune it and no data set's numbers are baked in. `as_linear` reduces a fitted probe
to one weight matrix, which a predictor saves as a plain array (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from geoloc_core.evaluate.stats import location_folds

C_GRID = (0.01, 0.1, 1.0, 10.0)


def fit_linear_probe(emb: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int | None = None) -> Pipeline:
    """Standardised multinomial logistic regression; C picked by 3-fold cross-validation over locations: sklearn's
    GroupKFold (unshuffled), or with `seed` the locations shuffled into folds (`stats.location_folds`). The fit itself
    draws nothing (lbfgs), so the folds are the only thing a seed can change."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    n_folds = min(3, len(np.unique(groups)))
    if n_folds < 2 or len(np.unique(labels)) < 2:
        return probe.fit(emb, labels)
    if seed is None:
        cv = GroupKFold(n_folds)
    else:
        fold = location_folds(groups, n_folds, seed)
        cv = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(n_folds)]
    search = GridSearchCV(probe, {"logisticregression__C": list(C_GRID)}, cv=cv, scoring="accuracy", error_score=0.0)
    search.fit(emb, labels, groups=groups)
    return search.best_estimator_


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe as arrays: logits = emb @ weights[:-1] + weights[-1], the standardisation
    folded into the weights."""

    weights: np.ndarray  # (D + 1, R) float64
    classes: np.ndarray  # (R,) the labels the columns stand for

    def log_proba(self, emb: np.ndarray) -> np.ndarray:
        """(M, D) embeddings -> (M, R) log-probabilities of the classes."""
        logits = np.asarray(emb, np.float64) @ self.weights[:-1] + self.weights[-1]
        return logits - logsumexp(logits, axis=1, keepdims=True)


def as_linear(probe: Pipeline) -> LinearProbe:
    """A `fit_linear_probe` pipeline as one linear map with the same probabilities (two classes: the logistic's one
    logit z split into -z/2, z/2, whose softmax is the same sigmoid)."""
    scaler, logistic = probe[0], probe[-1]
    coef = logistic.coef_ / scaler.scale_  # (R, D), or (1, D) with two classes
    intercept = logistic.intercept_ - coef @ scaler.mean_
    if len(logistic.classes_) == 2:
        coef, intercept = np.stack([-coef[0], coef[0]]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    return LinearProbe(np.vstack([coef.T, intercept[None]]), np.asarray(logistic.classes_))
