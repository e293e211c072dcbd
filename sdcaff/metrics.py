"""Scores of emotion predictions, in percent: WA, UA, the authors' rounded UA, confusion, mean and spread."""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, precision_recall_fscore_support

# authors' code: UA[i] = np.round(matrix[i, i] / class_total[i], 3) before the recalls are averaged.
AUTHORS_RECALL_DECIMALS = 3


def weighted_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Returns WA in percent: the share of correct predictions; true, pred (N,) class indices."""
    return 100.0 * float(accuracy_score(true, pred))


def unweighted_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Returns UA in percent: the mean recall over the classes present in `true` (balanced accuracy)."""
    with warnings.catch_warnings():
        # A class predicted but absent from `true` has no recall; scikit-learn warns and leaves it out.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return 100.0 * float(balanced_accuracy_score(true, pred))


def confusion(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Returns counts (n_classes, n_classes): row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(pred)), 1)
    return matrix


def authors_ua(true: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Returns UA in percent as the authors compute it: per-class recalls rounded to 3 decimals, then averaged."""
    matrix = confusion(true, pred, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    # The authors divide by every class count and would get NaN for an absent class; like
    # balanced accuracy, we average over the classes present instead.
    # authors' code: np.round on a float64, i.e. rint(x * 1000) / 1000: half to even on the product, which
    # can differ from Python's round (correctly rounded on x itself) by 0.001, e.g. recall 1/80 or 3/80.
    recalls = [np.round(matrix[c, c] / support[c], AUTHORS_RECALL_DECIMALS) for c in np.flatnonzero(present)]
    return float(100.0 * sum(recalls) / len(recalls))


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Returns {fold_mean, fold_std} over units; std is the sample std (ddof 1), None for one unit."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"fold_mean": mean, "fold_std": std}


def per_class(true: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, list]:
    """Returns recall, precision and F1 in percent per class (None where undefined) and each class's support.

    A class absent from `true` has no recall; one never predicted has no precision: None, not 0.
    """
    labels = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, zero_division=np.nan)

    def percent(values):
        return [None if math.isnan(v) else 100.0 * float(v) for v in values]

    return {"recall": percent(recall), "precision": percent(precision), "f1": percent(f1),
            "support": [int(n) for n in support]}
