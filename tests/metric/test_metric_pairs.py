"""Pairs sampled from class labels: balanced, correctly labelled, seeded."""

import numpy as np
import pytest

from contrastive.metric import pairs_from_labels
from contrastive.metric._pairs import pair_indices_from_labels


@pytest.mark.parametrize("n_pairs", [2, 7, 500])
def test_pairs_are_balanced_and_labelled(n_pairs):
    labels = np.array([3, 3, 3, 5, 5, 9, 9, 9, 9, 1])  # class 1 has a single member
    idx, y = pair_indices_from_labels(labels, n_pairs, random_state=0)
    assert idx.shape == (n_pairs, 2) and (y == 1).sum() == n_pairs // 2
    same = labels[idx[:, 0]] == labels[idx[:, 1]]
    np.testing.assert_array_equal(same, y == 1)
    assert np.all(idx[:, 0] != idx[:, 1])
    assert not np.isin(idx[y == 1], [9]).any()  # no similar pair for class 1


def test_pairs_cover_all_points_and_are_seeded():
    labels = np.repeat(np.arange(4), 5)
    a, ya = pair_indices_from_labels(labels, 2000, random_state=1)
    b, yb = pair_indices_from_labels(labels, 2000, random_state=np.random.RandomState(1))
    np.testing.assert_array_equal(a, b)
    assert set(a.ravel()) == set(range(20))
    c, _ = pair_indices_from_labels(labels, 2000, random_state=2)
    assert not np.array_equal(a, c)


def test_pairs_from_labels_gathers_rows():
    X = np.arange(20.0).reshape(10, 2)
    labels = np.arange(10) % 2
    pairs, y = pairs_from_labels(X, labels, 6, random_state=0)
    assert pairs.shape == (6, 2, 2)
    np.testing.assert_array_equal((pairs[:, 0, 0] / 2) % 2 == (pairs[:, 1, 0] / 2) % 2, y == 1)
