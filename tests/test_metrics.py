import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score

from sdcaff import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wa_and_ua_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    true = rng.choice(4, size=200, p=[0.5, 0.2, 0.1, 0.2])
    pred = np.where(rng.random(200) < 0.6, true, rng.integers(0, 4, 200))
    assert metrics.weighted_accuracy(true, pred) == pytest.approx(100 * np.mean(true == pred))
    assert metrics.unweighted_accuracy(true, pred) == pytest.approx(100 * balanced_accuracy_score(true, pred))
    assert metrics.unweighted_accuracy(true, pred) == pytest.approx(100 * recall_score(true, pred, average="macro"))
    assert np.array_equal(metrics.confusion(true, pred, 4), confusion_matrix(true, pred, labels=range(4)))


def test_ua_differs_from_wa_on_imbalanced_classes():
    # 8 of class 0, all right; 2 of class 1, all wrong: WA 80, UA 50.
    true = np.array([0] * 8 + [1] * 2)
    pred = np.zeros(10, dtype=int)
    assert metrics.weighted_accuracy(true, pred) == pytest.approx(80.0)
    assert metrics.unweighted_accuracy(true, pred) == pytest.approx(50.0)


def test_authors_round_each_recall_to_three_decimals():
    # Recalls 2/3, 1/6, 5/7, 1/1: rounded 0.667, 0.167, 0.714, 1.0 -> mean 0.637; unrounded 0.636905.
    true = np.array([0] * 3 + [1] * 6 + [2] * 7 + [3] * 1)
    pred = np.array([0, 0, 1] + [1] + [0] * 5 + [2] * 5 + [3] * 2 + [3])
    assert metrics.unweighted_accuracy(true, pred) == pytest.approx(100 * (2 / 3 + 1 / 6 + 5 / 7 + 1) / 4)
    assert metrics.authors_ua(true, pred, 4) == pytest.approx(100 * (0.667 + 0.167 + 0.714 + 1.0) / 4)
    assert metrics.authors_ua(true, pred, 4) != pytest.approx(metrics.unweighted_accuracy(true, pred), abs=1e-6)


def test_a_class_absent_from_the_truth_is_left_out_of_ua():
    true = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])
    assert metrics.unweighted_accuracy(true, pred) == pytest.approx(75.0)
    assert metrics.authors_ua(true, pred, 4) == pytest.approx(75.0)
    assert metrics.confusion(true, pred, 4)[0, 3] == 1


def test_spread_is_the_sample_std_and_none_for_one_unit():
    values = [70.0, 72.5, 68.0, 75.0]
    got = metrics.spread(values)
    assert got["fold_mean"] == pytest.approx(np.mean(values))
    assert got["fold_std"] == pytest.approx(np.std(values, ddof=1))
    assert metrics.spread([61.0]) == {"fold_mean": 61.0, "fold_std": None}
