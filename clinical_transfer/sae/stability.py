"""Seed stability of SAE features: does a feature's decoder direction come back when the SAE is refit?

Why: SAEs trained with different seeds on the same activations share only part of their dictionary
(Paulo & Belrose 2025, "Sparse autoencoders trained on the same data learn different features"). A
correlate found on a feature that exists in one seed only is a weak basis for any claim. Each feature of
the reference SAE is matched to one feature of every other SAE — one-to-one by the Hungarian algorithm
on decoder cosines (``scipy.optimize.linear_sum_assignment``) where the dictionaries are small enough,
else to its best match — and its stability is the mean matched cosine, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from clinical_transfer.errors import ClinicalTransferError

STABLE = 0.8
"""Stability at or above which a feature counts as stable."""
HUNGARIAN_MAX = 8192
"""Largest dictionary matched one-to-one (the cost matrix is d_sae x d_sae float64)."""


def _unit_rows(W) -> np.ndarray:
    W = np.asarray(W.detach().cpu().numpy() if hasattr(W, "detach") else W, dtype=np.float64)
    return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)


def matched_cosines(reference, other, hungarian_max: int = HUNGARIAN_MAX) -> np.ndarray:
    """Cosine of each reference decoder row with its match among ``other``'s rows (one-to-one when both
    dictionaries have at most ``hungarian_max`` features, else best match)."""
    R, S = _unit_rows(reference), _unit_rows(other)
    if R.shape[1] != S.shape[1]:
        raise ClinicalTransferError(f"SAEs of different input widths ({R.shape[1]} and {S.shape[1]}) cannot be "
                                    "compared", "compare SAEs trained on the same encoder layer")
    if max(len(R), len(S)) <= hungarian_max:
        C = R @ S.T
        rows, cols = linear_sum_assignment(C, maximize=True)
        out = np.zeros(len(R))
        out[rows] = C[rows, cols]
        return out
    out = np.empty(len(R))
    for lo in range(0, len(R), 1024):
        out[lo:lo + 1024] = (R[lo:lo + 1024] @ S.T).max(axis=1)
    return out


def decoder_stability(reference, others: list) -> np.ndarray:
    """Per feature of ``reference`` (a decoder matrix (d_sae, d_in) or an SAE), the mean matched cosine
    over ``others``, in [0, 1]; NaN when there is nothing to compare with."""
    ref = reference.W_dec if hasattr(reference, "W_dec") else reference
    if not others:
        return np.full(_unit_rows(ref).shape[0], np.nan)
    cos = [matched_cosines(ref, o.W_dec if hasattr(o, "W_dec") else o) for o in others]
    return np.clip(np.mean(cos, axis=0), 0.0, 1.0)
