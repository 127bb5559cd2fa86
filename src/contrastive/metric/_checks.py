"""Input validation of the metric learners: pairs, pair labels, hyperparameters.

Every check raises ``TypeError`` or ``ValueError`` with a message that names the argument
and says how to fix it. None of these helpers is public API.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import sparse
from sklearn.utils.validation import check_array


def _as_float_array(name, a):
    if sparse.issparse(a):
        raise TypeError(
            f"{name} is a sparse matrix, which is not supported (sparse data): "
            f"convert it with {name}.toarray()"
        )
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be read as a numeric array ({exc}); pass a NumPy array") from exc
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} holds complex numbers; Complex data not supported, pass real features")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} must hold numbers, got dtype {arr.dtype}; convert it with "
                f"np.asarray({name}, dtype=float)"
            ) from exc
    return arr.astype(np.float64, copy=False)


def check_pairs(pairs, n_features=None, name="pairs"):
    """``pairs`` as float64 of shape ``(n_pairs, 2, n_features)``, finite."""
    arr = _as_float_array(name, pairs)
    if arr.ndim != 3 or arr.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n_pairs, 2, n_features), got shape {arr.shape}; stack "
            f"the two sides of each pair with np.stack([X_left, X_right], axis=1)"
        )
    if arr.shape[0] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one pair with one feature")
    if n_features is not None and arr.shape[2] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[2]} features, but the learner was fitted with {n_features} "
            f"features; pass pairs with the features used in fit"
        )
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} contains NaN or inf; drop or impute those pairs (e.g. with "
            f"sklearn.impute.SimpleImputer on the points) before calling"
        )
    return arr


def check_pair_labels(y, n_pairs, name="y"):
    """Pair labels in {+1, -1} or {1, 0} (1 = similar) -> (similar mask (B,), classes (2,)).

    Both kinds must be present.
    """
    if sparse.issparse(y):
        raise TypeError(f"{name} must be a dense 1-D array of pair labels, got a sparse matrix")
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n_pairs:
        raise ValueError(
            f"{name} must be 1-D with one label per pair, shape ({n_pairs},), got shape "
            f"{arr.shape}; label pair i with {name}[i]"
        )
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numeric labels (+1/-1 or 1/0), got dtype {arr.dtype}")
    values = set(np.unique(arr).tolist())
    if not (values <= {1, -1} or values <= {1, 0}):
        shown = sorted(v for v in values if v == v)[:6] + (["nan"] if any(v != v for v in values) else [])
        raise ValueError(
            f"{name} must hold +1 (similar) and -1 (dissimilar), or 1 and 0, got values {shown}; "
            f"map your labels, e.g. np.where(same, 1, -1)"
        )
    if len(values) < 2:
        kind = "similar (1)" if values == {1} else "dissimilar"
        raise ValueError(
            f"{name} holds a single class: only {kind} pairs; the objective contrasts similar "
            f"with dissimilar pairs, so add pairs of the other kind"
        )
    classes = np.array([-1, 1]) if -1 in values else np.array([0, 1])
    return arr == 1, classes


def check_number(name, value, low=None, high=None, low_open=False, integer=False):
    """A finite real (or int) within [low, high] ((low, high] if ``low_open``)."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a float'}, got {value!r}")
    if not np.isfinite(np.asarray(value)):  # what the ufunc does with it; asarray types the ABC
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_points(X, name="X"):
    """``X`` as a finite float64 (n_samples, n_features) array (scikit-learn's check_array,
    with the fix added to its NaN/Inf message)."""
    try:
        return check_array(X, input_name=name, dtype=np.float64)
    except ValueError as exc:
        msg = str(exc)
        if "NaN" in msg or "infinity" in msg or "inf" in msg.lower().split():
            raise ValueError(
                f"{msg} Drop or impute those rows (e.g. with sklearn.impute.SimpleImputer) first."
            ) from exc
        raise
