"""Rank effect sizes for every feature: AUROC (= Mann–Whitney U / n₊n₋), its CI, Cliff's δ.

Why placements: with ``P₊ᵢ`` = number of negatives below positive i plus half the ties (its
"placement"), AUROC = mean(P₊)/n₋, and the Brunner–Munzel variance that
``statsmodels.stats.nonparametric.rank_compare_2indep`` uses is built from the sample variances of the
placements of both groups. Each feature's positives and negatives are sorted separately (numpy's SIMD
sort, in the input's own float width), then one branch-free merge of the sorted halves counts, for
every value, the other group's values below it; a value tied across the groups adds half its run
length, exactly like sklearn's ``roc_auc_score`` counts ties. The merge runs four features in lock
step so that their compare-and-advance chains overlap — no per-feature Python loop, and the work
stays a small multiple of one pass over the matrix.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import stats


@dataclass(frozen=True)
class RankEffects:
    auroc: np.ndarray
    """P(feature of a positive > that of a negative) + ½ P(tie)."""
    low: np.ndarray
    high: np.ndarray
    """Confidence limits (Brunner–Munzel variance, t with Welch–Satterthwaite df)."""

    @property
    def cliffs_delta(self) -> np.ndarray:
        return 2.0 * self.auroc - 1.0


@njit(cache=True, nogil=True)
def _split_rows(block, pidx, nidx, A, B):  # pragma: no cover - JIT
    """Copy each row's positives into ``A`` and negatives into ``B``, each with a +inf sentinel in
    its last slot."""
    n1 = pidx.size
    n2 = nidx.size
    for r in range(block.shape[0]):
        row = block[r]
        a = A[r]
        b = B[r]
        for t in range(n1):
            a[t] = row[pidx[t]]
        for t in range(n2):
            b[t] = row[nidx[t]]
        a[n1] = np.inf
        b[n2] = np.inf


@njit(cache=True, nogil=True)
def _moments(a, b, n1, n2, L, R, out):  # pragma: no cover - JIT
    """Placement moments of one feature from its sorted halves and the counts of one "<=" merge:
    ``L[i]`` = #negatives < a_i and ``R[j]`` = #positives <= b_j. A value tied across the groups
    (found where ``b[L[i]] == a_i``, rare except for SAE zeros) adds its run length in the other
    group, counted once per distinct value. Sums are of doubled placements (ties count one half)."""
    s1 = 0
    q1 = 0
    run = 0
    for i in range(n1):
        x = a[i]
        lo = L[i]
        if b[lo] == x:  # b[n2] is the +inf sentinel: a finite x never ties with it
            if i == 0 or a[i - 1] != x:
                run = 0
                while b[lo + run] == x:
                    run += 1
            p = 2 * lo + run
        else:
            p = 2 * lo
        s1 += p
        q1 += p * p
    s2 = 0
    q2 = 0
    for j in range(n2):
        y = b[j]
        hi = R[j]
        if hi > 0 and a[hi - 1] == y:
            if j == 0 or b[j - 1] != y:
                run = 0
                while hi - 1 - run >= 0 and a[hi - 1 - run] == y:
                    run += 1
            p = 2 * hi - run
        else:
            p = 2 * hi
        s2 += p
        q2 += p * p
    out[0] = s1 / 2
    out[1] = q1 / 4
    out[2] = s2 / 2
    out[3] = q2 / 4


@njit(cache=True, nogil=True)
def _placement_moments(A, B, n1, n2, out):  # pragma: no cover - JIT
    """Per row of sorted (positives ``A``, negatives ``B``, +inf sentinels): sum and sum of squares of
    the placements of positives among negatives and of negatives among positives.

    The branch-free "<=" merge runs four rows in lock step (each row takes exactly n1 + n2 steps
    thanks to the sentinels), so four independent compare-and-advance chains overlap in the CPU."""
    m = A.shape[0]
    L = np.empty((4, n1 + 1), np.int64)
    R = np.empty((4, n2 + 1), np.int64)
    r0 = 0
    while r0 < m:
        k = min(4, m - r0)
        a0 = A[r0]
        a1 = A[r0 + 1 if k > 1 else r0]  # a short last group repeats its first row (results unused)
        a2 = A[r0 + 2 if k > 2 else r0]
        a3 = A[r0 + 3 if k > 3 else r0]
        b0 = B[r0]
        b1 = B[r0 + 1 if k > 1 else r0]
        b2 = B[r0 + 2 if k > 2 else r0]
        b3 = B[r0 + 3 if k > 3 else r0]
        L0 = L[0]
        L1 = L[1]
        L2 = L[2]
        L3 = L[3]
        R0 = R[0]
        R1 = R[1]
        R2 = R[2]
        R3 = R[3]
        i0 = i1 = i2 = i3 = 0
        j0 = j1 = j2 = j3 = 0
        for _ in range(n1 + n2):
            t0 = np.int64(a0[i0] <= b0[j0])
            t1 = np.int64(a1[i1] <= b1[j1])
            t2 = np.int64(a2[i2] <= b2[j2])
            t3 = np.int64(a3[i3] <= b3[j3])
            L0[i0] = j0  # the last write for a_i is made when a_i is taken: j = #b < a_i
            R0[j0] = i0  # likewise for b_j: i = #a <= b_j
            L1[i1] = j1
            R1[j1] = i1
            L2[i2] = j2
            R2[j2] = i2
            L3[i3] = j3
            R3[j3] = i3
            i0 += t0
            j0 += 1 - t0
            i1 += t1
            j1 += 1 - t1
            i2 += t2
            j2 += 1 - t2
            i3 += t3
            j3 += 1 - t3
        for q in range(k):
            _moments(A[r0 + q], B[r0 + q], n1, n2, L[q], R[q], out[r0 + q])
        r0 += k


def rank_effects(
    F: np.ndarray, positive: np.ndarray, alpha: float = 0.05, chunk: int = 256,
    workers: int | None = None,
) -> RankEffects:
    """AUROC and its (1-alpha) CI of each column of F for ``positive`` (bool) vs the rest.

    ``workers`` threads process column chunks in parallel (default: the machine's cores, at most 4).
    """
    positive = np.asarray(positive, bool)
    n1, n2 = int(positive.sum()), int((~positive).sum())
    m = F.shape[1]
    auroc, low, high = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    if n1 < 2 or n2 < 2:
        return RankEffects(auroc, low, high)
    n = n1 + n2
    dtype = np.float32 if F.dtype == np.float32 else np.float64
    pidx, nidx = np.flatnonzero(positive), np.flatnonzero(~positive)

    local = threading.local()  # per-thread scratch, reused: fresh multi-MB arrays per chunk page-fault

    def work(lo: int) -> None:
        hi = min(lo + chunk, m)
        block = np.ascontiguousarray(np.asarray(F[:, lo:hi], dtype=dtype).T)  # a view for column-major F
        if not hasattr(local, "A"):
            local.A, local.B = np.empty((chunk, n1 + 1), dtype), np.empty((chunk, n2 + 1), dtype)
        A, B = local.A[: hi - lo], local.B[: hi - lo]
        _split_rows(block, pidx, nidx, A, B)
        A[:, :n1].sort(axis=1)
        B[:, :n2].sort(axis=1)
        # Sorted, a row's non-finite values sit at its ends (NaN last): the merges need finite ones.
        ends = np.concatenate([A[:, 0], A[:, n1 - 1], B[:, 0], B[:, n2 - 1]])
        if not np.isfinite(ends).all():
            raise ValueError("rank effects need finite feature values (NaN or infinity found)")
        moments = np.empty((hi - lo, 4))
        _placement_moments(A, B, n1, n2, moments)
        s1, ss1, s2, ss2 = moments.T
        prob = s1 / n1 / n2
        v1 = (ss1 - s1 * s1 / n1) / (n1 - 1)
        v2 = (ss2 - s2 * s2 / n2) / (n2 - 1)
        var = n * (v1 / n2**2 / n1 + v2 / n1**2 / n2)
        std = np.sqrt(np.maximum(var, 0.0) / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = (n1 * v1 + n2 * v2) ** 2 / ((n1 * v1) ** 2 / (n1 - 1) + (n2 * v2) ** 2 / (n2 - 1))
            q = stats.t.ppf(1 - alpha / 2, df)
        auroc[lo:hi], low[lo:hi], high[lo:hi] = prob, prob - q * std, prob + q * std

    # numpy's sort and the compiled passes release the GIL: chunks run in parallel on the cores.
    with ThreadPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 4)) as pool:
        list(pool.map(work, range(0, m, chunk)))
    return RankEffects(auroc, low, high)
