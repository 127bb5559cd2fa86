"""The margin contrastive loss on Euclidean distance (Hadsell, Chopra, LeCun 2006).

Convention (torch's, and docs/derivations/contrastive_loss.md's): y = 1 means *similar*; DrLIM's paper
uses the opposite. Soft labels y in [0, 1] are allowed.

    L(y, u, v) = y 1/2 D^2 + (1 - y) 1/2 max(0, m - D)^2,   D = ||u - v||_2
    dL/du      = (u - v) (y - (1 - y) max(m - D, 0) / D),   dL/dv = -dL/du
    dL/dy      = 1/2 D^2 - 1/2 max(0, m - D)^2

At D = 0 the hinge term's gradient is undefined (the cone max(0, m - |x|)^2 has a kink
at x = 0); 0 is a valid Clarke subgradient by symmetry, and that is what we return.
See docs/derivations/contrastive_loss.md.
"""

import numpy as np


def forward(u, v, y, margin=1.0):
    """Per-pair losses, shape (B,). u, v: (B, d); y: (B,)."""
    u, v, y = (np.asarray(a, dtype=np.float64) for a in (u, v, y))
    D = np.sqrt(((u - v) ** 2).sum(axis=1))  # D = sqrt(sum_k (U_k - V_k)^2)
    hinge = np.maximum(0.0, margin - D)  # max(0, m - D)
    return y * 0.5 * D**2 + (1.0 - y) * 0.5 * hinge**2  # Y 1/2 D^2 + (1-Y) 1/2 max(0,m-D)^2


def grad(u, v, y, margin=1.0):
    """Analytic gradients (dL/du, dL/dv, dL/dy) of the per-pair losses (summed over pairs)."""
    u, v, y = (np.asarray(a, dtype=np.float64) for a in (u, v, y))
    diff = u - v  # (B, d)
    D = np.sqrt((diff**2).sum(axis=1))  # (B,)
    hinge = np.maximum(margin - D, 0.0)
    safe_D = np.where(D > 0, D, 1.0)
    ratio = np.where(D > 0, hinge / safe_D, 0.0)  # max(m - D, 0) / D, 0 at D = 0
    coef = y - (1.0 - y) * ratio  # Y - (1 - Y) max(m - D, 0) / D
    du = diff * coef[:, None]  # dL/dU_i = (U_i - V_i)(...)
    dy = 0.5 * D**2 - 0.5 * hinge**2
    return du, -du, dy
