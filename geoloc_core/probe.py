"""A linear probe on frozen embeddings: the region classifier of the "w/o" (no fine-tuning) rows.

Its strength is chosen by grouped cross-validation on the training photos alone, so the test
locations never tune it and no data set's numbers are baked in.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

C_GRID = (0.01, 0.1, 1.0, 10.0)


def fit_linear_probe(emb: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int = 0) -> Pipeline:
    """Standardised multinomial logistic regression; C picked by GroupKFold over locations."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
    n_folds = min(3, len(np.unique(groups)))
    if n_folds < 2 or len(np.unique(labels)) < 2:
        return probe.fit(emb, labels)
    search = GridSearchCV(probe, {"logisticregression__C": list(C_GRID)}, cv=GroupKFold(n_folds), scoring="accuracy",
                          error_score=0.0)
    search.fit(emb, labels, groups=groups)
    return search.best_estimator_
