"""Confound controls beyond adjustment: splits, matched subsets, and the stratified permutation null.

Why: adjustment assumes the confounds act additively and are measured well. Re-estimating within
strata (sex, age band, wave, language, quality), re-running on an exactly matched subset, and
permuting labels within strata test that assumption from three sides — the habits behind the matched
test sets that deflated published COVID-audio AUROCs (see shared/design/STATISTICS.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from clinical_transfer.hashing import seeded_order_key
from clinical_transfer.stats.association import associate, permutation_t
from clinical_transfer.stats.design import Family, confound_columns


def split_estimates(
    fam: Family,
    F: np.ndarray,
    features: list[str],
    split_on: list[str],
    min_participants: int = 20,
    cluster: bool = True,
) -> pd.DataFrame:
    """Per-stratum adjusted estimates of the given feature columns (F already restricted to them).

    A stratum is estimated only when each label level (binary) or the stratum (continuous) has at
    least ``min_participants`` participants; the split variable itself leaves the confound set.
    """
    out = []
    for var in split_on:
        if var not in fam.meta.columns:
            continue
        levels = fam.meta[var].astype("string")
        for level in sorted(set(levels.dropna())):
            mask = (levels == level).fillna(False).to_numpy()
            sub = fam.meta[mask]
            x = fam.x[mask]
            pids = sub["participant_id"].to_numpy()
            n_pos = int(pd.unique(pids[x == 1]).size) if fam.binary else int(pd.unique(pids).size)
            n_neg = int(pd.unique(pids[x == 0]).size) if fam.binary else n_pos
            if min(n_pos, n_neg) < min_participants:
                continue
            others = [c for c in fam.confounds if c != var and not (var == "age_band" and c == "age")]
            C, _ = confound_columns(sub, others)
            try:
                a = associate(x, F[mask], C, pids if cluster else None)
            except Exception:  # a stratum where the label is collinear with the remaining confounds
                continue
            ok = np.isfinite(a.se) & (a.se > 0)  # a feature constant within the stratum is not estimable there
            if not ok.any():
                continue
            out.append(pd.DataFrame({
                "feature": np.asarray(features)[ok], "split_variable": var, "stratum": str(level),
                "n_participants_pos": n_pos if fam.binary else pd.NA,
                "n_participants_neg": n_neg if fam.binary else pd.NA,
                "n_participants": int(pd.unique(pids).size),
                "beta": a.beta[ok], "se": a.se[ok], "p": a.p[ok],
            }))
    if not out:
        return pd.DataFrame(columns=["feature", "split_variable", "stratum", "n_participants_pos",
                                     "n_participants_neg", "n_participants", "beta", "se", "p"])
    return pd.concat(out, ignore_index=True)


def stability(splits: pd.DataFrame, beta_overall: pd.Series, alpha: float = 0.05) -> pd.DataFrame:
    """Per feature: strata estimated, strata with the overall sign, Cochran's Q heterogeneity p, reversals.

    Q is computed within each split variable (its strata partition the rows); the reported p is the
    smallest over variables, Bonferroni-corrected for the number of variables.
    """
    cols = ["n_strata", "n_strata_same_sign", "heterogeneity_q", "heterogeneity_p", "n_strata_reversed"]
    if splits.empty:
        return pd.DataFrame(columns=cols)
    s = splits.assign(overall=splits["feature"].map(beta_overall))
    s["same"] = np.sign(s["beta"]) == np.sign(s["overall"])
    s["reversed"] = (~s["same"]) & (s["p"] < alpha)
    rows = {}
    for feat, g in s.groupby("feature", sort=False):
        qs, ps = [], []
        for _, v in g.groupby("split_variable", sort=False):
            if len(v) < 2:
                continue
            w = 1.0 / v["se"].to_numpy() ** 2
            b = v["beta"].to_numpy()
            q = float(np.sum(w * (b - np.sum(w * b) / np.sum(w)) ** 2))
            qs.append(q)
            ps.append(float(stats.chi2.sf(q, len(v) - 1)))
        p = min(1.0, min(ps) * len(ps)) if ps else np.nan
        rows[feat] = (len(g), int(g["same"].sum()), max(qs) if qs else np.nan, p, int(g["reversed"].sum()))
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def matched_rows(fam: Family, match_on: list[str], seed: int = 0) -> np.ndarray:
    """Boolean mask of rows kept by exact 1:1 matching of participants within strata of ``match_on``.

    Per stratum, min(#pos, #neg) participants of each side are kept, in a deterministic order given
    by a seeded hash of the participant id. Only for binary labels.
    """
    if not fam.binary:
        return np.zeros(len(fam.x), bool)
    on = [c for c in match_on if c in fam.meta.columns]
    people = fam.meta.assign(_x=fam.x).groupby("participant_id", sort=True).agg(
        {"_x": "first", **{c: "first" for c in on}})
    key = people[on].astype("string").fillna("<NA>").agg("|".join, axis=1) if on else pd.Series("", people.index)
    keep: set = set()
    for _, grp in people.groupby(key, sort=True):
        pos = sorted(grp.index[grp["_x"] == 1], key=lambda p: seeded_order_key(seed, p))
        neg = sorted(grp.index[grp["_x"] == 0], key=lambda p: seeded_order_key(seed, p))
        k = min(len(pos), len(neg))
        keep.update(pos[:k])
        keep.update(neg[:k])
    return fam.meta["participant_id"].isin(keep).to_numpy()


def permuted_labels(fam: Family, strata: list[str], n_perm: int, seed: int) -> np.ndarray:
    """(n, B) label matrix: participant-level labels shuffled within strata, expanded to rows."""
    on = [c for c in strata if c in fam.meta.columns]
    people = fam.meta.assign(_x=fam.x).groupby("participant_id", sort=True).agg(
        {"_x": "first", **{c: "first" for c in on}})
    key = people[on].astype("string").fillna("<NA>").agg("|".join, axis=1).to_numpy() if on else np.zeros(len(people))
    rng = np.random.default_rng(seed)
    base = people["_x"].to_numpy(float)
    groups = [np.flatnonzero(key == k) for k in pd.unique(key)]
    P = np.empty((len(people), n_perm))
    for b in range(n_perm):
        v = base.copy()
        for idx in groups:
            v[idx] = base[idx][rng.permutation(len(idx))]
        P[:, b] = v
    row_of = people.index.get_indexer(fam.meta["participant_id"])
    return P[row_of]


def permutation_null(
    fam: Family, F: np.ndarray, C: np.ndarray | None, strata: list[str], n_perm: int, seed: int,
    cluster: bool = True, q: float = 0.05,
) -> dict:
    """Empirical rate of BH discoveries under the stratified null, and the max-|t| FWER threshold."""
    X = permuted_labels(fam, strata, n_perm, seed)
    T = permutation_t(X, F, C, fam.participants if cluster else None)
    df = (pd.unique(fam.participants).size - 1) if cluster else (len(fam.x) - (C.shape[1] if C is not None else 0) - 2)
    discoveries = []
    for b in range(n_perm):
        p = 2 * stats.t.sf(np.abs(T[b]), df)
        discoveries.append(int(multipletests(np.nan_to_num(p, nan=1.0), alpha=q, method="fdr_bh")[0].sum()))
    disc = np.asarray(discoveries)
    max_t = np.nanmax(np.abs(T), axis=1)
    return {
        "n_permutations": n_perm,
        "null_discovery_rate": float(disc.mean() / F.shape[1]),
        "null_any_discovery_rate": float((disc > 0).mean()),
        "null_mean_discoveries": float(disc.mean()),
        "maxt_threshold_95": float(np.quantile(max_t, 0.95)),
    }
