"""Confound controls beyond adjustment: splits, matched subsets, the change test and the replication split.

Why: adjustment assumes the confounds act additively and are measured well. Re-estimating within
strata (sex, age band, wave, language, quality) and re-running on exactly matched subsets test that
assumption — the habits behind the matched test sets that deflated published COVID-audio AUROCs (see
shared/design/STATISTICS.md). The change test asks whether adjustment *significantly* moved an estimate
before anyone calls it confound-explained, and the replication split asks the question that matters at
these sample sizes (Marek et al. 2022): does an effect found in half the people appear in the other half?
The Freedman–Lane null is in :mod:`~clinical_transfer.stats.permutation`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse, stats
from statsmodels.stats.multitest import multipletests

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import seeded_order_key, stable_unit
from clinical_transfer.stats.association import associate, confound_basis
from clinical_transfer.stats.design import Family, confound_columns, smallest_side


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
    """Per feature: strata estimated, strata with the overall sign, Cochran's Q heterogeneity p, reversals,
    the number of split variables with at least two estimated strata (where heterogeneity is testable), and
    the strata where the estimate is significant *in the overall direction*: one-sided p < ``alpha``
    (the two-sided p < 2 ``alpha`` with the overall sign). Taken together over strata this is an
    intersection-union test of "the effect is present in every stratum", valid at ``alpha`` without a
    multiplicity correction (Berger 1982): every stratum must pass on its own.

    Q is computed within each split variable (its strata partition the rows); the reported p is the
    smallest over variables, Bonferroni-corrected for the number of variables. Why the last count: Q
    tests whether the *size* of an effect differs between strata; its power grows with the effect, so a
    strong effect of different size in men and women is "heterogeneous" however consistent it is. An
    effect significant in the same direction in every stratum is effect modification, not instability
    (see :func:`~clinical_transfer.stats.verdicts.verdicts`).
    """
    cols = ["n_strata", "n_strata_same_sign", "heterogeneity_q", "heterogeneity_p", "n_strata_reversed",
            "n_split_variables", "n_strata_significant"]
    if splits.empty:
        return pd.DataFrame(columns=cols)
    s = splits.assign(overall=splits["feature"].map(beta_overall))
    s["same"] = np.sign(s["beta"]) == np.sign(s["overall"])
    s["reversed"] = (~s["same"]) & (s["p"] < alpha)
    s["confirmed"] = s["same"] & (s["p"] < 2 * alpha)  # one-sided, in the overall direction
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
        rows[feat] = (len(g), int(g["same"].sum()), max(qs) if qs else np.nan, p, int(g["reversed"].sum()), len(qs),
                      int(g["confirmed"].sum()))
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


def suppress_complements(splits: pd.DataFrame, totals: dict[str, int], min_cell: int) -> pd.DataFrame:
    """Complementary suppression of the per-stratum counts of a splits table.

    Strata that were not estimated are absent, so their size is the family total minus the published
    strata; when that difference is between 1 and ``min_cell`` - 1 the counts of the smallest published
    stratum are withheld too (repeatedly), so no small cell can be derived by subtraction. ``totals`` maps
    each count column to its family total. Estimates stay; only counts are withheld.
    """
    if splits.empty:
        return splits
    out = splits.copy()
    count_cols = [c for c in totals if c in out.columns]
    for c in count_cols:
        out[c] = out[c].astype("Float64")
    out["counts_suppressed"] = False
    for var, rows in out.groupby("split_variable", sort=False):
        strata = rows.drop_duplicates("stratum").set_index("stratum")[count_cols].astype(float)
        hidden: set[str] = set()
        while True:
            shown = strata.drop(index=list(hidden))
            residual = {c: totals[c] - shown[c].sum() for c in count_cols}
            if shown.empty or not any(0 < r < min_cell for r in residual.values()):
                break
            hidden.add(shown[count_cols].min(axis=1).idxmin())
        if hidden:
            mask = (out["split_variable"] == var) & out["stratum"].isin(hidden)
            out.loc[mask, count_cols] = pd.NA
            out.loc[mask, "counts_suppressed"] = True
    return out


def _binary_for_matching(fam: Family) -> np.ndarray:
    """0/1 side of each row for matching: the label itself, or above/below the participant median for a
    continuous label (matching then balances the confounds between high and low label values)."""
    if fam.binary:
        return fam.x
    per = pd.Series(fam.x).groupby(fam.participants).mean()
    return (fam.x > float(per.median())).astype(float)


def matched_estimates(fam: Family, F: np.ndarray, match_on: list[str], seed: int, draws: int, min_cell: int,
                      beta_adj: np.ndarray, se_adj: np.ndarray, cluster: bool = True) -> tuple[dict, str]:
    """Adjusted estimates on ``draws`` exactly matched subsets, and how often they agree with the full fit.

    Each draw matches 1:1 within strata of ``match_on`` with a different seeded order (draw d uses seed
    ``seed * 1000 + d``), so one lucky or unlucky subset cannot decide a verdict. Returned per feature:
    median β, p and participants over the draws, q = BH of the median p, and ``matched_agreement`` = the
    fraction of draws whose estimate has the full fit's sign and a 95% CI overlapping the full fit's.
    Agreement, not q on the (often much smaller) subset, is the check: q would mostly measure its power.
    The second value is why no estimate was formed ('' when it was).
    """
    side = _binary_for_matching(fam)
    probe = Family(fam.label, fam.contrast, fam.segment_group, True, fam.rows, side, fam.meta, fam.confounds)
    z = float(stats.norm.ppf(0.975))
    betas, ps, ns, agree = [], [], [], []
    reason = ""
    for d in range(draws):
        keep = matched_rows(probe, match_on, seed * 1000 + d)
        pids = fam.participants[keep]
        n_side = smallest_side(pids, side[keep], True)
        if n_side < min_cell:
            reason = f"matched subset too small ({n_side} participants a side, fewer than {min_cell})"
            continue
        C, _ = confound_columns(fam.meta[keep], fam.confounds)
        try:
            a = associate(fam.x[keep], F[keep], C, pids if cluster else None)
        except ClinicalTransferError as exc:
            reason = f"matched subset cannot be fitted ({exc.problem})"
            continue
        betas.append(a.beta)
        ps.append(a.p)
        ns.append(pd.unique(pids).size)
        overlap = np.abs(a.beta - beta_adj) <= z * (a.se + se_adj)
        agree.append((np.sign(a.beta) == np.sign(beta_adj)) & overlap)
    if not betas:
        return {}, reason or "no matched subset"
    p_med = np.median(np.vstack(ps), axis=0)
    return {"beta_matched": np.median(np.vstack(betas), axis=0), "p_matched": p_med,
            "q_matched": multipletests(np.nan_to_num(p_med, nan=1.0), method="fdr_bh")[1],
            "n_participants_matched": float(np.median(ns)),
            "matched_agreement": np.mean(np.vstack(agree), axis=0)}, ""


def replication_split(fam: Family, F: np.ndarray, seed: int, alpha: float, min_cell: int,
                      cluster: bool = True) -> tuple[pd.DataFrame | None, str]:
    """Adjusted effects in a discovery and a replication half of the participants (stable seeded hash).

    ``replicated`` is defined for features discovered in the discovery half (BH q < ``alpha`` there): the
    same sign and p < 0.05 in the replication half; NA for the rest. Returns (table, reason when not run).
    """
    pids = fam.participants
    half = np.array([stable_unit(f"{seed}:replication:{p}") < 0.5 for p in pids])
    fits = []
    for name, rows in (("discovery", half), ("replication", ~half)):
        x, sub = fam.x[rows], fam.meta[rows]
        n_side = smallest_side(pids[rows], x, fam.binary)
        if n_side < min_cell:
            return None, f"{name} half too small ({n_side} participants a side, fewer than {min_cell})"
        C, _ = confound_columns(sub, fam.confounds)
        try:
            fits.append(associate(x, F[rows], C, pids[rows] if cluster else None))
        except ClinicalTransferError as exc:
            return None, f"{name} half cannot be fitted ({exc.problem})"
    disc, rep = fits
    q = multipletests(np.nan_to_num(disc.p, nan=1.0), method="fdr_bh")[1]
    found = q < alpha
    ok = found & (np.sign(rep.beta) == np.sign(disc.beta)) & (rep.p < 0.05)
    replicated = pd.array(np.where(found, ok, False), dtype="boolean")
    replicated[~found] = pd.NA
    return pd.DataFrame({"beta_discovery": disc.beta, "p_discovery": disc.p, "beta_replication": rep.beta,
                         "p_replication": rep.p, "replicated": replicated}), ""


def change_test(x: np.ndarray, F: np.ndarray, C: np.ndarray, clusters: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """β_raw − β_adj, its SE and p: did adjustment significantly move the estimate? (Clogg et al. 1995)

    Cluster-robust form of the Clogg test (as Stata's ``suest``, Mize, Doan & Long 2019): with
    a = x_c / x_cᵀx_c and b = x̃ / x̃ᵀx̃, the change is Σ_i (a_i − b_i) f_i, and its sandwich variance sums,
    per participant, Σ_{i∈g} (a_i e_raw,i − b_i e_adj,i) over the two models' residuals, times G/(G−1);
    t with G − 1 df. Without clusters every row is its own. Equal to the stacked-regression covariance
    of statsmodels (tests).
    """
    x = np.asarray(x, float)
    n, m = F.shape
    xc = x - x.mean()
    a = xc / (xc @ xc)
    Q = confound_basis(C, n)
    xt = x - Q @ (Q.T @ x)
    b = xt / (xt @ xt)
    codes = pd.factorize(pd.Series(clusters if clusters is not None else np.arange(n)))[0]
    G = int(codes.max()) + 1
    W = sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(G, n))
    change, se = np.empty(m), np.empty(m)
    for lo in range(0, m, 512):
        Fc = np.asarray(F[:, lo:lo + 512], float)
        Fc = Fc - Fc.mean(axis=0)
        beta_raw, beta_adj = a @ Fc, b @ Fc
        Ft = Fc - Q @ (Q.T @ Fc)
        score = a[:, None] * (Fc - np.outer(xc, beta_raw)) - b[:, None] * (Ft - np.outer(xt, beta_adj))
        S = W @ score
        se[lo:lo + 512] = np.sqrt(G / (G - 1) * np.einsum("gj,gj->j", S, S))
        change[lo:lo + 512] = beta_raw - beta_adj
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * stats.t.sf(np.abs(change / se), G - 1)
    return change, se, p
