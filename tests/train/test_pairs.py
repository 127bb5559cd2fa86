import numpy as np
import pytest

from contrastive.train.pairs import label_pairs, neighbour_pairs


def test_label_pairs_are_correct_and_seeded(rng):
    labels = rng.integers(0, 4, size=60)
    i, j, y = label_pairs(labels, 4, seed=1)
    assert np.all((labels[i] == labels[j]) == (y == 1)) and np.all(i != j)
    assert (y == 1).sum() == 120 and (y == 0).sum() == 120
    for a, b in zip(label_pairs(labels, 4, seed=1), (i, j, y)):
        np.testing.assert_array_equal(a, b)


def test_label_pairs_errors():
    with pytest.raises(ValueError, match="1 class"):
        label_pairs([1, 1, 1])
    with pytest.raises(ValueError, match="pairs_per_sample"):
        label_pairs([0, 1], pairs_per_sample=0)


def test_neighbour_pairs_follow_input_space(rng):
    X = np.concatenate([rng.normal(size=(20, 3)), rng.normal(size=(20, 3)) + 50])
    i, j, y = neighbour_pairs(X, k=3, neg_per_sample=2, seed=0)
    cluster = np.arange(40) // 20
    assert np.all(cluster[i[y == 1]] == cluster[j[y == 1]])
    assert np.all(i != j)
    _, _, ys = neighbour_pairs(X, k=3, neg_per_sample=2, soft=True)
    assert np.all((ys > 0) == (y == 1)) and ys.max() <= 1.0


def test_neighbour_pairs_errors():
    with pytest.raises(ValueError, match="k \\+ 2"):
        neighbour_pairs(np.zeros((3, 2)), k=2)
    with pytest.raises(ValueError, match="NaN"):
        neighbour_pairs(np.full((5, 2), np.nan), k=1)
