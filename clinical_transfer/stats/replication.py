"""Replication of reported correlates in a second corpus: per feature, per family, against a null.

Why these numbers (the transfer test of the package's name): a correlate found in one crowd-sourced
corpus is a hypothesis; the same feature moving the same way in another corpus, recorded by other
people on other devices, is evidence. For each originally reported feature the second corpus gives an
adjusted effect; the replication p is **one-sided in the original direction** (a feature that moves
the other way has p >= 0.5), FDR-controlled (Benjamini–Hochberg) **within each family's replicated
set**. A family's replication rate is compared with the rate of **random feature sets of the same size
drawn from the second corpus's family**, each given the original features' directions: features that
merely share the second corpus's overall drift (many features move with a strong label) replicate at
the null rate, not above it. The Spearman correlation of the two corpora's effects says whether the
ordering of effect sizes carries over.

A failure to replicate is a result, not an error: it is reported with the same care as a success.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from clinical_transfer.stats.verdicts import NO_NUMBERS

#: Segment groups by kind: speech results are never pooled or mapped onto cough/breath, and back.
SPEECH_GROUPS = frozenset({"prompted_speech", "vowel"})
RESPIRATORY_GROUPS = frozenset({"cough", "breath"})

FEATURE_COLUMNS = (
    "label", "segment_group", "segment_group_replication", "feature", "verdict_original", "beta_original",
    "beta_replication", "se_replication", "p_two_sided_replication", "same_sign", "p_one_sided", "q_one_sided",
    "replicated",
)
FAMILY_COLUMNS = (
    "label", "segment_group", "segment_group_replication", "n_features", "n_tested", "n_same_sign", "n_replicated",
    "replication_rate", "null_rate_mean", "null_rate_95th", "p_vs_null", "null_draws", "spearman_rho", "spearman_n",
    "n_participants_pos", "n_participants_neg", "note",
)


def group_kind(group: str) -> str:
    """``speech``, ``respiratory`` or ``other`` (the pooling rule's two sides)."""
    if group in SPEECH_GROUPS:
        return "speech"
    if group in RESPIRATORY_GROUPS:
        return "respiratory"
    return "other"


def one_sided_p(p_two_sided: np.ndarray, same_sign: np.ndarray) -> np.ndarray:
    """One-sided p in the original direction from a symmetric test's two-sided p."""
    p = np.asarray(p_two_sided, float)
    return np.where(same_sign, p / 2.0, 1.0 - p / 2.0)


def bh_rows(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values of each row of ``p`` (draws x m), vectorised over the rows.

    Equal to ``statsmodels.stats.multitest.multipletests(row, method="fdr_bh")[1]`` for every row (tested).
    """
    p = np.atleast_2d(np.asarray(p, float))
    m = p.shape[1]
    if m == 0:
        return p.copy()
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    q = np.empty_like(p)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), axis=1)
    return q


def replication_rate(p_two: np.ndarray, beta: np.ndarray, direction: np.ndarray, alpha: float) -> np.ndarray:
    """Share of each row's features replicated (same sign, one-sided BH q < alpha); rows are sets."""
    same = np.sign(beta) == direction
    q = bh_rows(one_sided_p(p_two, same))
    return ((q < alpha) & same).mean(axis=1)


def replication_tables(original: pd.DataFrame, second: pd.DataFrame, group_map: dict[str, str], alpha: float = 0.05,
                       draws: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-feature and per-family replication of ``original``'s features in ``second``.

    ``original``: the reported rows (``segment_group``, ``feature``, ``beta_adj``, ``verdict``, ``label``).
    ``second``: the second corpus's full overlay table for the mapped label (every feature of every
    family: ``segment_group``, ``feature``, ``beta_adj``, ``se_adj``, ``p_adj``, ``verdict``). Families
    that the second corpus could not estimate or had to suppress are reported with their reason and no
    numbers.
    """
    rng = np.random.default_rng(seed)
    feat_rows, fam_rows = [], []
    for group in sorted(original["segment_group"].unique()):
        mine = original[original["segment_group"] == group].sort_values("feature").reset_index(drop=True)
        label = str(mine["label"].iloc[0])
        g2 = group_map.get(group, group)
        fam = second[second["segment_group"] == g2].set_index("feature")
        base = {"label": label, "segment_group": group, "segment_group_replication": g2, "n_features": len(mine)}
        if fam.empty or fam["verdict"].iloc[0] in NO_NUMBERS:
            reason = "no such group in the second corpus" if fam.empty else str(fam["note"].iloc[0] if "note" in fam
                                                                                   else fam["verdict"].iloc[0])
            fam_rows.append({**base, "n_tested": 0, "null_draws": 0, "note": f"not replicable here: {reason}"})
            continue
        tested = fam.reindex(mine["feature"])
        beta2 = tested["beta_adj"].to_numpy(float)
        p2 = tested["p_adj"].to_numpy(float)
        direction = np.sign(mine["beta_adj"].to_numpy(float))
        ok = np.isfinite(beta2) & np.isfinite(p2)
        same = np.sign(beta2) == direction
        p1 = np.full(len(mine), np.nan)
        q1 = np.full(len(mine), np.nan)
        p1[ok] = one_sided_p(p2[ok], same[ok])
        q1[ok] = bh_rows(p1[ok])[0] if ok.any() else q1[ok]
        replicated = ok & same & (q1 < alpha)
        feat_rows.append(pd.DataFrame({
            "label": label, "segment_group": group, "segment_group_replication": g2, "feature": mine["feature"],
            "verdict_original": mine["verdict"], "beta_original": mine["beta_adj"].to_numpy(float),
            "beta_replication": beta2, "se_replication": tested["se_adj"].to_numpy(float),
            "p_two_sided_replication": p2, "same_sign": np.where(ok, same, pd.NA), "p_one_sided": p1,
            "q_one_sided": q1, "replicated": np.where(ok, replicated, pd.NA),
        }))
        m = int(ok.sum())
        rate = float(replicated[ok].mean()) if m else np.nan
        universe = fam[np.isfinite(fam["beta_adj"].to_numpy(float)) & np.isfinite(fam["p_adj"].to_numpy(float))]
        M = len(universe)
        row = {**base, "n_tested": m, "n_same_sign": int((ok & same).sum()), "n_replicated": int(replicated.sum()),
               "replication_rate": rate, "null_draws": 0}
        if m and M >= m:
            pick = np.argsort(rng.random((draws, M)), axis=1)[:, :m]  # draws of m distinct features
            null = replication_rate(universe["p_adj"].to_numpy(float)[pick], universe["beta_adj"].to_numpy(float)[pick],
                                    np.broadcast_to(direction[ok], (draws, m)), alpha)
            row.update(null_rate_mean=float(null.mean()), null_rate_95th=float(np.quantile(null, 0.95)),
                       p_vs_null=float((1 + (null >= rate).sum()) / (1 + draws)), null_draws=draws)
        if m >= 3:
            rho = spearmanr(mine["beta_adj"].to_numpy(float)[ok], beta2[ok]).statistic
            row.update(spearman_rho=float(rho), spearman_n=m)
        row.update(n_participants_pos=fam["n_participants_pos"].iloc[0], n_participants_neg=fam["n_participants_neg"].iloc[0],
                   note="" if m == len(mine) else f"{len(mine) - m} feature(s) never active in the second corpus")
        fam_rows.append(row)
    features = (pd.concat(feat_rows, ignore_index=True) if feat_rows else pd.DataFrame(columns=FEATURE_COLUMNS))
    families = pd.DataFrame(fam_rows).reindex(columns=FAMILY_COLUMNS)
    return features[list(FEATURE_COLUMNS)], families
