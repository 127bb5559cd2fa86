"""Shared machinery of the cosine similarity learners: hyperparameters, whitened-PCA start,
the fit on pairs, and the metric API (transform, pair_score, get_mahalanobis_matrix).

See :class:`contrastive.metric.CosineSimilarityLearner` for the model and the maths, and
``docs/derivations/cosine_similarity.md`` for the gradients.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array, check_is_fitted

from . import _objective as obj
from ._checks import check_choice, check_number, check_pairs, check_points


def whitened_pca(points, n_components, center):
    """Mean (d,) and the whitened-PCA map M0 (k, d), scaled to unit Frobenius norm.

    ``M0 = diag(var_1 .. var_k)^(-1/2) V_k^T``: the top k principal directions, each divided
    by its standard deviation, so M0 x has identity covariance. Components with variance
    below 1e-10 of the largest are dropped (rank). ``n_components``: None (all kept), an int
    (at most that many), or a float in (0, 1) (the fewest explaining that fraction of the
    variance).
    """
    mean = points.mean(axis=0) if center else np.zeros(points.shape[1])
    _, s, vt = np.linalg.svd(points - mean, full_matrices=False)
    var = s**2 / max(len(points) - 1, 1)  # (min(N, d),)
    rank = int((var > 1e-10 * var[0]).sum()) if var.size and var[0] > 0 else 0
    if rank == 0:
        raise ValueError(
            "the training points are all equal"
            + (" after centering" if center else "")
            + "; cosine similarity needs points that differ: pass distinct points"
        )
    if n_components is None:
        k = rank
    elif isinstance(n_components, numbers.Integral):
        k = min(int(n_components), rank)
    else:
        k = int(np.searchsorted(np.cumsum(var) / var.sum(), n_components) + 1)
        k = min(k, rank)
    M0 = vt[:k] / np.sqrt(var[:k])[:, None]  # (k, d)
    return mean, M0 / np.linalg.norm(M0)


class _CosineMetricBase(BaseEstimator):
    """Hyperparameters and fitted state shared by the pair and the supervised learner."""

    def _check_params(self, n_features):
        check_choice("form", self.form, ("map", "symmetric"))
        check_choice("objective", self.objective, obj.OBJECTIVES)
        check_choice("solver", self.solver, ("lbfgs", "gd"))
        check_number("alpha", self.alpha, low=0)
        if self.beta is not None:
            check_number("beta", self.beta, low=0)
        check_number("margin", self.margin, low=0, high=2, low_open=True)
        check_number("max_iter", self.max_iter, low=1, integer=True)
        check_number("tol", self.tol, low=0, low_open=True)
        check_number("min_eigenvalue", self.min_eigenvalue, low=0, low_open=True)
        nc = self.n_components
        if nc is not None:
            if isinstance(nc, bool) or not isinstance(nc, numbers.Real):
                raise TypeError(f"n_components must be None, an int or a float in (0, 1), got {nc!r}")
            if isinstance(nc, numbers.Integral) and not 1 <= int(nc) <= n_features:
                raise ValueError(f"n_components must be in [1, n_features={n_features}], got {nc}")
            if not isinstance(nc, numbers.Integral) and not 0 < float(nc) < 1:
                raise ValueError(f"n_components as a float is a variance fraction in (0, 1), got {nc}")
        if isinstance(self.init, str):
            check_choice("init", self.init, ("pca", "identity"))

    def _beta(self):
        """beta, or its default for the objective: 2.0 for 'csml', 0.1 for 'margin'."""
        if self.beta is None:
            return 2.0 if self.objective == "csml" else 0.1
        return float(self.beta)

    def _initial(self, points):
        """mean (d,), W0 (map: M0 (k, d); symmetric: A0 (d, d)), both unit Frobenius norm."""
        d = points.shape[1]
        if isinstance(self.init, str) and self.init == "pca":
            mean, M0 = whitened_pca(points, self.n_components, self.center)
        else:
            mean = points.mean(axis=0) if self.center else np.zeros(d)
            if isinstance(self.init, str):  # identity
                M0 = np.eye(d)
            else:
                M0 = check_array(self.init, input_name="init")
                want = (d, d) if self.form == "symmetric" else (M0.shape[0], d)
                if M0.shape != want or (self.form == "map" and M0.shape[0] > d):
                    raise ValueError(
                        f"init must be a ({'d, d' if self.form == 'symmetric' else 'k, d'}) array "
                        f"with d = {d} features, got shape {M0.shape}"
                    )
                if self.form == "symmetric":
                    A0 = (M0 + M0.T) / 2
                    if np.linalg.eigvalsh(A0)[0] < -1e-10 * np.abs(A0).max():
                        raise ValueError("init for form='symmetric' must be positive semi-definite")
                    return mean, A0 / np.linalg.norm(A0)
            M0 = M0 / np.linalg.norm(M0)
        if self.form == "symmetric":
            A0 = M0.T @ M0
            return mean, A0 / np.linalg.norm(A0)
        return mean, M0

    def _fit_pairs(self, pairs, similar):
        """Fit on float64 pairs (n, 2, d) and a boolean similar mask (n,)."""
        n, _, d = pairs.shape
        self._check_params(d)
        points = np.unique(pairs.reshape(2 * n, d), axis=0)
        mean, W0 = self._initial(points)
        x, y = pairs[:, 0] - mean, pairs[:, 1] - mean  # (n, d) each
        # a zero-norm side has no direction: its cosine is undefined under every metric
        live = (np.abs(x).max(1) > 0) & (np.abs(y).max(1) > 0)
        x, y, similar = x[live], y[live], similar[live]
        if not (similar.any() and (~similar).any()):
            raise ValueError(
                "pairs: after dropping pairs with a side equal to the mean (zero after "
                "centering), only one kind of pair is left; pass more pairs or center=False"
            )
        hyper = (self.objective, float(self.alpha), float(self.margin), self._beta())
        if self.form == "map":
            self.initial_loss_ = obj.map_loss_grad(W0, x, y, similar, W0, *hyper)[0]

            def fun(p):
                f, g = obj.map_loss_grad(p.reshape(W0.shape), x, y, similar, W0, *hyper)
                return f, g.ravel()

            if self.solver == "lbfgs":
                p, n_iter, ok = obj.lbfgs(fun, W0.ravel(), self.max_iter, self.tol)
            else:
                p, n_iter, ok = obj.projected_gradient(fun, W0.ravel(), lambda q: q, self.max_iter, self.tol)
            components = p.reshape(W0.shape)
            self.loss_ = obj.map_loss_grad(components, x, y, similar, W0, *hyper)[0]
        else:
            floor = float(self.min_eigenvalue) * float(np.linalg.eigvalsh(W0)[-1])
            A0 = obj.project_psd(W0, floor)
            self.initial_loss_ = obj.sym_loss_grad(A0, x, y, similar, A0, *hyper)[0]
            if self.solver == "lbfgs":

                def fun(s):
                    # minimise J(P(S)) over symmetric S: A = P(S) is always PD
                    A, _ = obj.clipped_chain(obj.unpack(s, d), None, floor)
                    f, H = obj.sym_loss_grad(A, x, y, similar, A0, *hyper)
                    _, H = obj.clipped_chain(obj.unpack(s, d), H, floor)
                    return f, obj.tie(H)

                # restart from S = P(S) until a round gains nothing: eigenvalues clipped in a
                # round had no gradient there, and may need to grow again
                A, n_iter, f_prev = A0, 0, np.inf
                while n_iter < self.max_iter:
                    s, it, ok = obj.lbfgs(fun, obj.pack(A), self.max_iter - n_iter, self.tol)
                    n_iter += max(it, 1)
                    A = obj.project_psd(obj.unpack(s, d), floor)
                    f = obj.sym_loss_grad(A, x, y, similar, A0, *hyper)[0]
                    if not f_prev - f > self.tol * max(1.0, abs(f)):
                        ok = True  # a restart gained nothing: stationary
                        break
                    f_prev = f
            else:

                def fun(a):
                    f, H = obj.sym_loss_grad(a.reshape(d, d), x, y, similar, A0, *hyper)
                    return f, H.ravel()

                def project(a):
                    return obj.project_psd(a.reshape(d, d), floor).ravel()

                a, n_iter, ok = obj.projected_gradient(fun, A0.ravel(), project, self.max_iter, self.tol)
                A = a.reshape(d, d)
            self.loss_ = obj.sym_loss_grad(A, x, y, similar, A0, *hyper)[0]
            lam, Q = np.linalg.eigh(A)
            components = (Q * np.sqrt(np.maximum(lam, 0.0))).T[::-1]  # A = L^T L, (d, d)
        self.mean_ = mean
        self.components_ = components
        self.n_features_in_ = d
        self.n_iter_ = n_iter
        self.converged_ = ok
        return self

    # -- the metric ---------------------------------------------------------------------

    def _check_points(self, X, name="X"):
        check_is_fitted(self, "components_")
        X = check_points(X, name)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input; pass the features used in fit"
            )
        return X

    def transform(self, X):
        """Embed points so that the plain cosine of embeddings is the learned similarity.

        Args:
            X: points, shape ``(n_samples, n_features)``.

        Returns:
            ``(X - mean_) @ components_.T``, shape ``(n_samples, n_components)``.
        """
        X = self._check_points(X)
        return (X - self.mean_) @ self.components_.T

    def get_mahalanobis_matrix(self):
        """The learned PSD matrix ``A = components_^T components_``, ``(d, d)``: the learned
        similarity is ``(x - mean_)^T A (y - mean_)`` over the two A-norms."""
        check_is_fitted(self, "components_")
        return self.components_.T @ self.components_

    def pair_score(self, pairs):
        """Learned cosine similarity of each pair, in [-1, 1] (higher = more similar).

        A pair with a side that maps to the zero vector (e.g. equal to ``mean_``) has no
        direction; its score is defined as 0.

        Args:
            pairs: shape ``(n_pairs, 2, n_features)``.

        Returns:
            Scores, shape ``(n_pairs,)``.
        """
        check_is_fitted(self, "components_")
        pairs = check_pairs(pairs, self.n_features_in_)
        z = (pairs - self.mean_) @ self.components_.T  # (n, 2, k)
        norms = np.linalg.norm(z, axis=2)  # (n, 2)
        denom = norms[:, 0] * norms[:, 1]
        dot = (z[:, 0] * z[:, 1]).sum(1)
        return np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)

    def pair_distance(self, pairs):
        """Learned cosine distance ``1 - pair_score``, in [0, 2], shape ``(n_pairs,)``."""
        return 1.0 - self.pair_score(pairs)
