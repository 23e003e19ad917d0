"""Freedman–Lane permutation null of a family, vectorised over every feature, with a max-T family-wise p.

Why Freedman–Lane (Winkler et al. 2014, NeuroImage 92:381): residualise the features on the confounds,
permute the residuals, add back the confound fit and refit the full model. It keeps the confounds' own
effects out of the null (a label shuffle inside coarse strata kept them in, and did nothing for a
continuous confound), and it holds up best among the permutation schemes with nuisance variables.
Permutations are of whole participants (exchangeability blocks): a participant's residual block moves
as one onto another participant with as many recordings, so the within-person correlation stays intact.

Why it is cheap: the full-model label coefficient of permuted data Ŷ + P·R is
β* = x̃ᵀ P R / x̃ᵀx̃ = [(I − QQᵀ) Pᵀx̃]ᵀ F / x̃ᵀx̃, so all B permutations are one (B, n) x (n, m) product
with the raw feature matrix.

Why the max-T statistic is β over the permutation scale of β*: max-T needs features whose null
distributions are comparable. Dividing by each feature's *observed* cluster-robust SE is not: SAE
features active in one or two participants have a collapsed SE, their permuted statistics explode and
set the max-T threshold for every feature (measured on the demo: p_fwe = 1 for planted effects with
t > 10). The root mean square of β* over the permutations is the feature's own null scale (the null is
centred at 0), computed from the permutations alone, so every feature's null has unit variance. (Min-p
would need B far above the number of features.) The null discovery rate asks the other question — how
often would the *parametric* BH claims fire under this null? — so it uses the observed SEs and the t
reference, as the overlay does.

What it cannot do: rescue a saturated design. Participants alone in a confound cell have residuals with
no between-person part, so they are not exchangeable with the others and the permutation scale is too
small; :mod:`~clinical_transfer.stats.diagnostics` stops such families before any test (measured in
tests/test_stats_ladder.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from clinical_transfer.stats.association import confound_basis

_CHUNK = 1024


def block_permutations(participants: np.ndarray | None, n: int, n_perm: int, seed: int) -> np.ndarray:
    """(B, n) row maps π_b: row i of the permuted data takes row π_b[i] of the original.

    Whole participants are exchanged with participants of the same number of rows (their rows in
    order); without participants every row is its own block.
    """
    rng = np.random.default_rng(seed)
    out = np.tile(np.arange(n), (n_perm, 1))
    if participants is None:
        return np.argsort(rng.random((n_perm, n)), axis=1)
    codes = pd.factorize(pd.Series(participants), sort=True)[0]
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1]
    sizes = np.diff(np.r_[starts, n])
    for s in np.unique(sizes):
        first = starts[sizes == s]
        if len(first) < 2:
            continue
        R = order[first[:, None] + np.arange(s)[None, :]]  # (k, s): rows of each participant of size s
        sigma = np.argsort(rng.random((n_perm, len(first))), axis=1)
        out[:, R.ravel()] = R[sigma].reshape(n_perm, -1)
    return out


def permuted_regressors(x: np.ndarray, C: np.ndarray | None, perms: np.ndarray) -> tuple[np.ndarray, float]:
    """(B, n) vectors v_b with β*_b = v_b · F, and x̃ᵀx̃; v_b = (I − QQᵀ) Pᵀx̃ / x̃ᵀx̃."""
    n = len(x)
    Q = confound_basis(C, n)
    xt = x - Q @ (Q.T @ x)
    sxx = float(xt @ xt)
    V = np.zeros(perms.shape)
    np.put_along_axis(V, perms, np.broadcast_to(xt, perms.shape), axis=1)  # V[b, π_b[i]] = x̃_i
    V -= (V @ Q) @ Q.T
    return V / sxx, sxx


def freedman_lane(x: np.ndarray, F: np.ndarray, C: np.ndarray | None, participants: np.ndarray | None,
                  beta_obs: np.ndarray, se_obs: np.ndarray, df_t: int, n_perm: int, seed: int, alpha: float = 0.05,
                  perms: np.ndarray | None = None, keep: int = 100) -> dict:
    """Family-wise p (max-T) per feature and the null discovery rate of BH at ``alpha``.

    Returns ``p_fwe`` (m,), ``t_std`` (m,: β over the permutation SD), ``maxt`` (B,), ``beta_perm`` of the
    first ``keep`` permutations (for tests), and the family summary: null discovery rate (BH discoveries
    per feature under the null, over the first ``keep`` permutations), rate of permutations with any
    discovery, the 95% max-T threshold.
    """
    n, m = F.shape
    if perms is None:
        perms = block_permutations(participants, n, n_perm, seed)
    B = perms.shape[0]
    V, _ = permuted_regressors(np.asarray(x, float), C, perms)
    dtype = np.float32 if F.dtype == np.float32 else np.float64
    V = V.astype(dtype)
    maxt = np.zeros(B)
    k = min(keep, B)
    kept = np.empty((k, m))
    sd = np.empty(m)
    for lo in range(0, m, _CHUNK):
        hi = min(lo + _CHUNK, m)
        beta = V @ np.asarray(F[:, lo:hi], dtype=dtype)  # (B, c)
        kept[:, lo:hi] = beta[:k]
        s = np.sqrt(np.mean(np.square(beta, dtype=np.float64), axis=0))  # null mean is 0: x̃ sums to 0 per permutation
        sd[lo:hi] = s
        T = np.abs(beta) / np.where(s > 0, s, np.inf)
        np.maximum(maxt, T.max(axis=1), out=maxt)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_std = np.where(sd > 0, np.asarray(beta_obs, float) / sd, np.nan)
    t_abs = np.abs(t_std)
    scale = np.where(np.isfinite(se_obs) & (se_obs > 0), se_obs, np.inf)
    sorted_max = np.sort(maxt)
    exceed = B - np.searchsorted(sorted_max, t_abs, side="left")
    p_fwe = np.where(np.isfinite(t_abs), (1.0 + exceed) / (B + 1.0), np.nan)
    # BH under the null: discoveries in each of the first k permutations
    Tk = np.abs(kept / scale[None, :])
    p = np.sort(2.0 * stats.t.sf(Tk, df_t), axis=1)
    ok = int(np.isfinite(t_abs).sum())
    crit = alpha * np.arange(1, m + 1) / max(ok, 1)
    below = p <= crit[None, :]
    disc = np.where(below.any(axis=1), m - np.argmax(below[:, ::-1], axis=1), 0)
    return {
        "p_fwe": p_fwe, "t_std": t_std, "maxt": maxt, "beta_perm": kept,
        "summary": {"n_permutations": B, "scheme": "Freedman-Lane, whole-participant blocks of equal size",
                    "null_discovery_rate": float(disc.mean() / max(ok, 1)),
                    "null_any_discovery_rate": float((disc > 0).mean()),
                    "null_mean_discoveries": float(disc.mean()),
                    "maxt_threshold_95": float(np.quantile(maxt, 0.95))},
    }
