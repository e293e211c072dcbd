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


def numpy_authors_ua(true: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Returns the authors' UA re-written in numpy: np.round(diag / row sums, 3) on float64, mean, in percent."""
    matrix = confusion_matrix(true, pred, labels=range(n_classes))
    return 100 * np.mean(np.round(np.diag(matrix) / matrix.sum(axis=1), 3))


def scores(correct: list[int], support: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (true, pred): class c has support[c] rows, its first correct[c] predicted right, the rest as c + 1."""
    true = np.concatenate([np.full(n, c) for c, n in enumerate(support)])
    pred = np.concatenate([np.where(np.arange(n) < k, c, (c + 1) % len(support)) for c, (k, n) in
                           enumerate(zip(correct, support))])
    return true, pred


@pytest.mark.reliability("fidelity")
def test_authors_recalls_round_as_numpy_not_python():
    # 1/80, 9/80 and 3/80 times 1000 give exactly 12.5, 112.5 and 37.5 in float64, rounded half to even (12,
    # 112, 38); their binary values lie just above, above and below the half, so Python's round gives 0.013,
    # 0.113 and 0.037. 1/16 is an exact half in binary too: both round it to even, 0.062.
    true, pred = scores([1, 9, 3, 1], [80, 80, 80, 16])
    assert [round(k / n, 3) for k, n in [(1, 80), (9, 80), (3, 80), (1, 16)]] == [0.013, 0.113, 0.037, 0.062]
    ours = metrics.authors_ua(true, pred, 4)
    assert ours == pytest.approx(100 * np.mean([0.012, 0.112, 0.038, 0.062]), abs=1e-12)
    assert ours == pytest.approx(100 * np.mean([0.013, 0.113, 0.037, 0.062]) - 0.025, abs=1e-12)
    assert ours == numpy_authors_ua(true, pred, 4)
    assert isinstance(ours, float)


@pytest.mark.reliability("fidelity")
@pytest.mark.parametrize("support", [80, 240, 400])
def test_authors_ua_equals_numpy_on_every_recall_of_a_class_size(support):
    # Every k / support as class 0 beside three fixed classes: the same floats as numpy. These class sizes
    # put some k / support * 1000 on a float64 half, where Python's round moves UA by 0.025 points.
    fixed_correct, fixed_support = [5, 1, 9], [7, 3, 11]
    moved = 0
    for k in range(support + 1):
        true, pred = scores([k, *fixed_correct], [support, *fixed_support])
        ours = metrics.authors_ua(true, pred, 4)
        assert ours == numpy_authors_ua(true, pred, 4)
        python = 100 * np.mean([round(c / n, 3) for c, n in zip([k, *fixed_correct], [support, *fixed_support])])
        moved += abs(ours - python) > 0.02
    assert moved > 0
