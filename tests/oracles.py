"""The test oracles: every objective written once as plain torch autograd over the dense matrix.

Each function is the objective's formula, nothing more: it holds the whole ``N x N`` (or
``B x C``) logit matrix, takes gradients from autograd, and is what the fast paths (the dense
op, the blockwise engine, the Triton kernels, the distributed back-end) are compared with.
``tests/test_oracles.py`` checks every oracle against the NumPy float64 references in
``contrastive.reference`` (themselves checked against central finite differences in
``tests/reference/``), so an oracle cannot drift from the derivation it names.

Conventions shared by all:

- ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``) is the only positional argument after the
  inputs and the scalar parameters, so ``fn(*inputs, *params, reduction)`` works (the calling
  convention of ``tests/ops/engine_check.py``); everything else is keyword-only.
- ``temperature`` (and ``bias``) may be floats or tensors that require grad.
- ``normalize=True`` divides every row by its L2 norm first (``torch.nn.functional.normalize``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def reduce(per_row: torch.Tensor, reduction: str, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """``per_row`` as is (``"none"``), summed, or summed over ``count`` (default: its length)."""
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.sum() / (per_row.shape[0] if count is None else count)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _unit(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.normalize(x, dim=-1) if normalize else x


def positive_index(N: int, device: torch.device | None = None) -> torch.Tensor:
    """p(i) = (i + N/2) mod N: the other view of row i in a stacked two-view batch."""
    return (torch.arange(N, device=device) + N // 2) % N


def contrastive_loss(
    u: torch.Tensor, v: torch.Tensor, y: torch.Tensor, margin: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """Margin contrastive loss (Hadsell et al. 2006; docs/derivations/contrastive_loss.md).

    D_b = |u_b - v_b|,  L_b = y_b D_b^2 / 2 + (1 - y_b) max(0, m - D_b)^2 / 2.
    """
    D = torch.linalg.vector_norm(u - v, dim=1)  # (B,)
    per = y * 0.5 * D**2 + (1 - y) * 0.5 * torch.clamp(margin - D, min=0) ** 2
    return reduce(per, reduction)


def nt_xent(
    z: torch.Tensor,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    exclude_self: bool = True,
    decoupled: bool = False,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE / NT-Xent on stacked views z (N, d) (SimCLR, Chen et al. 2020; van den Oord et
    al. 2018; docs/derivations/info_nce.md).

    S = Z Z^T / tau,  loss_i = logsumexp_{k in K_i} S_ik - S_{i,p(i)},  p(i) = (i + N/2) mod N,
    with K_i all k (``exclude_self=False``), k != i (``exclude_self=True``), and also
    k != p(i) with ``decoupled`` (DCL, Yeh et al. 2022; the "DCL" section of the derivation).
    """
    z = _unit(z, normalize)
    N = z.shape[0]
    p = positive_index(N, z.device)
    S = z @ z.T / temperature  # (N, N)
    drop = torch.zeros(N, N, dtype=torch.bool, device=z.device)
    if exclude_self:
        drop |= torch.eye(N, dtype=torch.bool, device=z.device)
    if decoupled:
        drop[torch.arange(N), p] = True
    rows = torch.arange(N, device=z.device)
    per = torch.logsumexp(S.masked_fill(drop, NEG_INF), 1) - S[rows, p]
    return reduce(per, reduction)


def info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor, reduction: str = "mean", **kw: bool
) -> torch.Tensor:
    """:func:`nt_xent` of the two views z1, z2 (B, d) stacked as Z = [z1; z2] (N = 2B rows);
    ``exclude_self``, ``decoupled``, ``normalize`` as there."""
    return nt_xent(torch.cat([z1, z2]), temperature, reduction, **kw)


def nt_xent_rows(z: torch.Tensor, idx: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """The per-row losses of :func:`nt_xent` (self excluded, ``normalize=False``) of the rows
    ``idx`` only, against every column: a (len(idx), N) slice, never the N x N matrix
    (loss_i = logsumexp_{k != i} S_ik - S_{i,p(i)}; docs/derivations/info_nce.md)."""
    N = z.shape[0]
    rows = torch.arange(len(idx), device=z.device)
    S = z[idx] @ z.T / temperature  # (R, N)
    S = S.index_put((rows, idx), torch.tensor(NEG_INF, dtype=S.dtype, device=S.device))  # k != i
    return torch.logsumexp(S, 1) - S[rows, (idx + N // 2) % N]


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Two-tower (CLIP) loss (Radford et al. 2021; the "Two towers" section of
    docs/derivations/info_nce.md).

    S = A B^T / tau,  loss_i = (logsumexp_j S_ij - S_ii) / 2 + (logsumexp_j S_ji - S_ii) / 2.
    """
    a, b = _unit(a, normalize), _unit(b, normalize)
    S = a @ b.T / temperature  # (B, B)
    d = torch.diagonal(S)
    per = 0.5 * ((torch.logsumexp(S, 1) - d) + (torch.logsumexp(S, 0) - d))
    return reduce(per, reduction)


def clip_loss_rows(
    a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """The per-row losses of :func:`clip_loss` (``normalize=False``) of the pairs ``idx`` only:
    row i of S and column i of S, each against every row of the other tower (the "Two towers"
    section of docs/derivations/info_nce.md)."""
    rows = torch.arange(len(idx), device=a.device)
    R = a[idx] @ b.T / temperature  # (R, B): a_i against every b
    Cc = b[idx] @ a.T / temperature  # (R, B): b_i against every a
    pos = R[rows, idx]
    return 0.5 * (torch.logsumexp(R, 1) - pos) + 0.5 * (torch.logsumexp(Cc, 1) - pos)


def row_lse(
    x: torch.Tensor,
    y: torch.Tensor,
    temperature: float | torch.Tensor,
    self_col: int | None = None,
    *,
    drop: torch.Tensor | None = None,
) -> torch.Tensor:
    """lse_i = logsumexp_j x_i . y_j / tau for query rows x (R, d) against candidates y (N, d):
    the normaliser of every objective above, and what the tile engines' pass 1 computes (its
    gradient, by autograd, is their pass 2: docs/derivations/info_nce.md, "Gradient with
    respect to the logits"). With ``self_col`` = o, the entry (i, o + i) is left out (x is
    y's rows o .. o + R); ``drop`` (R, N) boolean leaves out any other entries."""
    S = x @ y.T / temperature  # (R, N)
    mask = torch.zeros_like(S, dtype=torch.bool) if drop is None else drop.clone()
    if self_col is not None:
        mask[torch.arange(len(x)), self_col + torch.arange(len(x))] = True
    return torch.logsumexp(S.masked_fill(mask, NEG_INF), 1)


def tile_mask(
    R: int,
    C: int,
    self_offset: int | None = None,
    row_key: torch.Tensor | None = None,
    col_key: torch.Tensor | None = None,
    keep_offset: int | None = None,
) -> torch.Tensor:
    """The (R, C) boolean mask that ``contrastive.ops.tiles.TileMask`` describes, written from its
    definition: (i, j) is dropped when j = i + self_offset, or when row_key_i = col_key_j and
    not j = i + keep_offset (equal ids: false negatives; decoupled positives)."""
    i, j = torch.arange(R)[:, None], torch.arange(C)[None, :]
    drop = torch.zeros(R, C, dtype=torch.bool)
    if row_key is not None and col_key is not None:
        eq = row_key[:, None] == col_key[None, :]
        if keep_offset is not None:
            eq &= j != i + keep_offset
        drop |= eq
    if self_offset is not None:
        drop |= j == i + self_offset
    return drop


def supcon_positives(labels: torch.Tensor) -> torch.Tensor:
    """(N, N) boolean: j is a positive of i when labels agree and j != i."""
    N = labels.shape[0]
    return (labels[:, None] == labels[None, :]) & ~torch.eye(N, dtype=torch.bool, device=labels.device)


def supcon_anchor_count(labels: torch.Tensor) -> int:
    """The number of rows with at least one positive: the denominator of SupCon's mean."""
    return int(supcon_positives(labels).any(1).sum())


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Supervised contrastive loss, L_out (Khosla et al. 2020; docs/derivations/supcon_loss.md).

    S = Z Z^T / tau,  loss_i = -(1 / |P(i)|) sum_{p in P(i)} (S_ip - logsumexp_{k != i} S_ik),
    P(i) = {j != i : y_j = y_i}; 0 for a row without positive; 'mean' averages over the rows
    that have one (:func:`supcon_anchor_count`).
    """
    z = _unit(z, normalize)
    N = z.shape[0]
    eye = torch.eye(N, dtype=torch.bool, device=z.device)
    S = z @ z.T / temperature  # (N, N)
    logp = S - torch.logsumexp(S.masked_fill(eye, NEG_INF), 1, keepdim=True)
    pos = supcon_positives(labels)
    n = pos.sum(1)
    per = -logp.masked_fill(~pos, 0.0).sum(1) / n.clamp(min=1)
    per = torch.where(n > 0, per, torch.zeros_like(per))
    return reduce(per, reduction, max(supcon_anchor_count(labels), 1))


def pair_nce_count(labels: torch.Tensor) -> int:
    """The number of positive pairs (a, p), a != p with equal labels: the denominator of pair NCE's mean."""
    return int(supcon_positives(labels).sum())


def pair_nce(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """pytorch-metric-learning's NT-Xent with class labels (docs/derivations/pair_nce.md).

    S = Z Z^T / tau,  loss_a = sum_{p in P(a)} -log(e^{S_ap} / (e^{S_ap} + sum_{n in N(a)} e^{S_an})),
    P(a) = {p != a : y_p = y_a}, N(a) = {n : y_n != y_a}; 'mean' averages over the positive
    pairs (:func:`pair_nce_count`), 0 when there is none.
    """
    z = _unit(z, normalize)
    N = z.shape[0]
    S = z @ z.T / temperature  # (N, N)
    same = labels[:, None] == labels[None, :]
    has_neg = (~same).any(1)  # rows without a negative: log 0 = -inf, kept out of autograd's way
    masked = torch.where(has_neg[:, None], S.masked_fill(same, NEG_INF), torch.zeros_like(S))
    neg = torch.where(has_neg, torch.logsumexp(masked, 1), torch.full_like(S[:, 0], NEG_INF))  # (N,)
    term = torch.logaddexp(S, neg[:, None]) - S  # -log p_ap
    pos = same & ~torch.eye(N, dtype=torch.bool, device=z.device)
    per = torch.where(pos, term, torch.zeros_like(term)).sum(1)
    return reduce(per, reduction, max(pair_nce_count(labels), 1))


def retrieval_loss(
    a: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    symmetric: bool = False,
    ids: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """In-batch negatives with hard negatives (MultipleNegativesRankingLoss, Henderson et al.
    2017; docs/derivations/retrieval_loss.md).

    Candidates C = [P; N] (negatives (M, d) or (B, K, d) flattened), S = A C^T / tau, entries
    (i, j < B), j != i, with ids_j = ids_i masked (false negatives):
    loss_i = logsumexp_j S_ij - S_ii, or with ``symmetric`` the mean of that and the column
    term logsumexp_{k < B} S_ki - S_ii over the B x B block.
    """
    B, d = a.shape
    negs = None if n is None else n.reshape(-1, d)
    a, p = _unit(a, normalize), _unit(p, normalize)
    negs = None if negs is None else _unit(negs, normalize)
    cand = p if negs is None else torch.cat([p, negs])
    S = a @ cand.T / temperature  # (B, B + M)
    if ids is not None:
        eye = torch.eye(B, dtype=torch.bool, device=a.device)
        dup = (ids[:, None] == ids[None, :]) & ~eye
        S = torch.cat([S[:, :B].masked_fill(dup, NEG_INF), S[:, B:]], 1)
    rows = torch.arange(B, device=a.device)
    diag = S[rows, rows]
    per = torch.logsumexp(S, 1) - diag
    if symmetric:
        per = 0.5 * per + 0.5 * (torch.logsumexp(S[:, :B], 0) - diag)
    return reduce(per, reduction)


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float | torch.Tensor,
    bias: float | torch.Tensor,
    reduction: str = "mean",
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Sigmoid pairwise loss (SigLIP, Zhai et al. 2023; docs/derivations/siglip_loss.md).

    S_ij = a_i . b_j / tau + bias,  y_ij = 1 on the diagonal and -1 off it,
    loss_i = -sum_j log sigmoid(y_ij S_ij).
    """
    a, b = _unit(a, normalize), _unit(b, normalize)
    B = a.shape[0]
    S = a @ b.T / temperature + bias  # (B, B)
    y = 2 * torch.eye(B, dtype=S.dtype, device=S.device) - 1
    per = -F.logsigmoid(y * S).sum(1)
    return reduce(per, reduction)


def weighted_grads(
    per_row: torch.Tensor, weights: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Autograd of sum_i w_i loss_i with respect to ``inputs``: the gradients a kernel that takes
    per-row weights (the upstream gradient of ``reduction='none'``) has to return (the
    weighted gradients of the derivations, e.g. (WG + (WG)^T) Z / tau in
    docs/derivations/info_nce.md)."""
    return torch.autograd.grad((weights.to(per_row) * per_row).sum(), inputs)


def _hcl_terms(pos: torch.Tensor, L: torch.Tensor, negmask: torch.Tensor, temperature, beta, tau_plus):
    """Robinson et al.'s estimator as their reference code writes it (``joshr17/HCL``), per row
    over the entries of L (logits s / tau) that ``negmask`` marks as negatives: pos = l_i."""
    neg = torch.exp(L).masked_fill(~negmask, 0.0)
    imp = torch.exp(beta * L).masked_fill(~negmask, 0.0)  # exp(beta s / tau), not detached
    N = negmask.sum(1).to(L.dtype)
    reweight_neg = (imp * neg).sum(1) / (imp.sum(1) / N)
    e_pos = torch.exp(pos)
    Ng = (-tau_plus * N * e_pos + reweight_neg) / (1 - tau_plus)
    tau = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(float(temperature))
    Ng = torch.maximum(Ng, N * torch.exp(-1.0 / tau))  # the clamp (torch.clamp(min=...)'s gradient)
    return -torch.log(e_pos / (e_pos + Ng))


def hcl_info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    beta: float,
    tau_plus: float = 0.0,
    exclude_self: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """HCL (Robinson et al. 2021) on two views: the authors' ``criterion`` per row of the stacked
    [z1; z2], negatives every row but itself (when ``exclude_self``) and its positive."""
    z = _unit(torch.cat([z1, z2]), normalize)
    N = z.shape[0]
    L = z @ z.T / temperature
    p = positive_index(N, z.device)
    rows = torch.arange(N, device=z.device)
    negmask = torch.ones(N, N, dtype=torch.bool, device=z.device)
    negmask[rows, p] = False
    if exclude_self:
        negmask[rows, rows] = False
    return reduce(_hcl_terms(L[rows, p], L, negmask, temperature, beta, tau_plus), reduction)


def hcl_clip(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    beta: float,
    tau_plus: float = 0.0,
    normalize: bool = True,
) -> torch.Tensor:
    """HCL on the two-tower loss: the mean of the row (a to b) and column (b to a) estimators."""
    a, b = _unit(a, normalize), _unit(b, normalize)
    L = a @ b.T / temperature
    eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    pos = L.diagonal()
    row = _hcl_terms(pos, L, ~eye, temperature, beta, tau_plus)
    col = _hcl_terms(pos, L.T, ~eye, temperature, beta, tau_plus)
    return reduce(0.5 * row + 0.5 * col, reduction)


def retrieval_features(
    a: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None,
    temperature: float | torch.Tensor,
    reduction: str = "mean",
    *,
    directions: tuple[str, ...] = ("query_to_doc",),
    partition_mode: str = "joint",
    hardness_mode: str | None = None,
    hardness_strength: float = 0.0,
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    guide: tuple | None = None,
    guide_margin: float = 0.0,
    guide_margin_strategy: str = "absolute",
    contrast_anchors: bool = False,
    contrast_positives: bool = False,
    ids: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """retrieval_loss with its issue-25 features, dense (docs/derivations/retrieval_loss.md):
    the logit matrices of every direction named, masked, boosted, then one joint log-sum-exp
    per row or a mean of per-direction ones; or HCL's estimator over the query_to_doc negatives."""
    B, d = a.shape
    K = n.shape[1] if n is not None and n.dim() == 3 else 0
    negs = None if n is None else _unit(n.reshape(-1, d), normalize)
    M = 0 if negs is None else negs.shape[0]
    a, p = _unit(a, normalize), _unit(p, normalize)
    docs = p if negs is None else torch.cat([p, negs])  # (B + M, d)
    dev = a.device
    eye = torch.eye(B, dtype=torch.bool, device=dev)
    own_neg = torch.ones(B, M, dtype=torch.bool, device=dev)
    if K:
        own_neg = torch.arange(B, device=dev)[:, None] == (torch.arange(M, device=dev) // K)[None, :]
    own = torch.cat([eye, own_neg], 1)  # a query's own documents
    pos_col = torch.cat([eye, torch.zeros(B, M, dtype=torch.bool, device=dev)], 1)
    same = torch.zeros(B, B, dtype=torch.bool, device=dev) if ids is None else ids[:, None] == ids[None, :]
    dup = same & ~eye  # false negatives from the ids
    fn_qd = torch.cat([dup, torch.zeros(B, M, dtype=torch.bool, device=dev)], 1)
    fn_qq, fn_pp = dup.clone(), dup.clone()
    if guide is not None:
        ga, gp, gn = (None if x is None else F.normalize(x, dim=-1) for x in (*guide, None)[:3])
        gdocs = gp if gn is None else torch.cat([gp, gn.reshape(-1, gp.shape[1])])

        def cos(x, y):  # elementwise, as GISTEmbedLoss: equal rows give bit-equal entries
            return (x[:, None, :] * y[None, :, :]).sum(-1)

        g_qd = cos(ga, gdocs)
        t = g_qd[:, :B].diagonal()  # the threshold from the same matrix, as GISTEmbedLoss
        thr = (t - guide_margin if guide_margin_strategy == "absolute" else t - t.abs() * guide_margin)[
            :, None
        ]
        fn_qd |= (g_qd > thr) & ~pos_col
        fn_qq |= cos(ga, ga) > thr
        fn_pp |= cos(gp, gp) > thr
    s_qd = a @ docs.T
    boost = torch.zeros(B, B + M, dtype=torch.bool, device=dev)
    if hardness_mode == "in_batch_negatives":
        boost = ~own
    elif hardness_mode == "hard_negatives":
        boost = own & ~pos_col & torch.cat([torch.zeros_like(eye), own_neg], 1)
    elif hardness_mode == "all_negatives":
        boost = ~pos_col
    L_qd = s_qd / temperature + hardness_strength * s_qd.detach() * boost
    pos = L_qd[:, :B].diagonal()
    if hcl_beta is not None:
        negmask = ~(fn_qd | pos_col)
        return reduce(_hcl_terms(pos, L_qd, negmask, temperature, hcl_beta, hcl_tau_plus), reduction)
    blocks = [L_qd.masked_fill(fn_qd, NEG_INF)]
    if "doc_to_query" in directions:
        blocks.append((a @ p.T / temperature).T.masked_fill(dup, NEG_INF))
    if "query_to_query" in directions or contrast_anchors:
        blocks.append((a @ a.T / temperature).masked_fill(fn_qq | eye, NEG_INF))
    if "doc_to_doc" in directions:
        # a shared set belongs to no query: every document sees it
        own_docs = own if K else torch.cat([eye, torch.zeros_like(own_neg)], 1)
        dd = (p @ docs.T / temperature).masked_fill(own_docs | torch.cat([dup, own_neg & False], 1), NEG_INF)
        blocks.append(dd)
    elif contrast_positives:
        blocks.append((p @ p.T / temperature).masked_fill(fn_pp | eye, NEG_INF))
    if partition_mode == "joint":
        logz = torch.logsumexp(torch.cat(blocks, 1), 1)
    else:
        logz = sum(torch.logsumexp(x, 1) for x in blocks) / len(blocks)
    return reduce(logz - pos, reduction)


def matryoshka(oracle, n_inputs, dims, weights=None):
    """The Matryoshka form of an oracle (Kusupati et al. 2022; docs/derivations/matryoshka.md):
    sum_k w_k oracle(x[..., :d_k] / |x[..., :d_k]|, ...) with each of the first ``n_inputs``
    arguments (``None`` stays ``None``) cut to its prefix and L2-normalised on its own, as
    sentence-transformers' MatryoshkaLoss does; ``fn(*inputs, *params, reduction, **kw)`` as
    the oracle's. Dims in any order, repeats counted once each."""
    weights = [1.0] * len(dims) if weights is None else weights

    def fn(*args, **kw):
        total = 0.0
        for d, w in zip(dims, weights):
            cut = [None if x is None else F.normalize(x[..., :d], dim=-1) for x in args[:n_inputs]]
            total = total + w * oracle(*cut, *args[n_inputs:], **kw)
        return total

    return fn
