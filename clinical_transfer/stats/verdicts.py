"""Verdicts: the one place that turns a family's estimates and checks into a word per feature.

A verdict names the checks it passed; a check that could not run lowers the rung and ``note`` says why.
Per feature (α = ``alpha``; q = Benjamini–Hochberg within the family), first match wins:

* ``not estimable`` — the family's design is too thin to test (see
  :mod:`~clinical_transfer.stats.diagnostics`); ``note`` gives participants, parameters, residual df;
* ``suppressed`` — a side of the contrast has fewer than ``min_cell`` participants (no numbers shown);

for an adjusted association (q_adj < α):

* ``tracks nuisance`` — the feature moves with a nuisance variable (duration, loudness, silence, ...)
  at least as strongly as with the label;
* ``unstable across splits`` — a robustness check ran and failed: an estimated confound stratum has
  the opposite sign, or a significant reversal, or significant heterogeneity (Cochran's Q, Bonferroni
  over split variables) unless the estimate is significant in the overall direction in *every* stratum
  (one-sided p < α each: an intersection-union test), or the matched estimate disagrees (fewer than half of the matching draws have the same sign
  and an overlapping 95% CI). Why the exception: Q detects a difference in *size*; a strong effect that
  is larger in women than in men is heterogeneous at any sample size, yet it is replicated in each
  stratum — a quantitative interaction (effect modification, noted as such), not the qualitative one
  (a change of direction) that makes a finding unstable (Gail & Simon, Biometrics 1985);
* ``adjusted correlate, robustness untested`` — nothing failed, but a check could not run: no split
  variable with ≥ 2 estimable strata (each needs ``min_stratum`` participants a side), no matched
  subset, or no permutation null;
* ``adjusted correlate, not family-wise significant`` — every check ran and agreed, but the
  Freedman–Lane max-T family-wise p is ≥ α;
* ``robust correlate`` — q_adj < α, ≥ 2 estimated strata in at least one split variable and every
  estimated stratum with the same sign, no significant reversal, no significant heterogeneity (or every
  stratum significant in the same direction: the note then says the size differs), the matched estimate
  present and agreeing, not a nuisance hit, and p_fwe < α;

otherwise:

* ``confound-explained`` — q_raw < α unadjusted, q_adj ≥ α adjusted, the change β_raw − β_adj is itself
  significant (cluster-robust Clogg test, BH over these candidates: q_change < α), *and* adjustment
  removed at least half of the estimate with confidence: the upper 95% confidence limit of the adjusted
  estimate (in the raw estimate's direction) is below half the raw estimate. A point estimate that merely
  shrank is not enough — a real effect whose adjusted estimate is noisy (label tied to wave) shrinks by
  chance about as often as not;
* ``inconclusive after adjustment`` — q_raw < α but not significant after adjustment, and the change is
  not significant: the adjusted estimate may be merely noisy (e.g. a label tied to collection wave);
* ``not significant`` — otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ATTENUATION_EXPLAINED = 0.5
MATCHED_AGREEMENT = 0.5
Z95 = 1.959963984540054
VERDICTS = ("robust correlate", "adjusted correlate, not family-wise significant",
            "adjusted correlate, robustness untested", "unstable across splits", "tracks nuisance",
            "confound-explained", "inconclusive after adjustment", "not significant", "not estimable", "suppressed")


NO_NUMBERS = ("suppressed", "not estimable")
"""Verdicts of a family that shows no numbers (whole family; the reason is in ``note``)."""


@dataclass
class FamilyChecks:
    """Why a family-level check could not run ('' when it ran)."""

    matched: str = ""
    permutation: str = ""
    splits: str = ""


def verdicts(df: pd.DataFrame, alpha: float, checks: FamilyChecks | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(verdict, note) per row of a fitted family table."""
    checks = checks or FamilyChecks()

    def col(name):
        return df[name].to_numpy(float, na_value=np.nan)

    q_adj, q_raw = col("q_adj"), col("q_raw")
    n_strata, same = col("n_strata"), col("n_strata_same_sign")
    confirmed = col("n_strata_significant") if "n_strata_significant" in df.columns else np.zeros(len(df))
    het, rev = col("heterogeneity_p"), col("n_strata_reversed")
    n_vars = col("n_split_variables")
    agree = col("matched_agreement")
    p_fwe = col("p_fwe")
    q_change = col("q_change")
    b_raw, b_adj, se_adj = col("beta_raw"), col("beta_adj"), col("se_adj")
    with np.errstate(divide="ignore", invalid="ignore"):  # adjusted upper limit as a share of the raw estimate
        share_high = (np.sign(b_raw) * b_adj + Z95 * se_adj) / np.abs(b_raw)
    nuisance = df["nuisance_flag"].fillna("").to_numpy(str)
    sig = q_adj < alpha

    split_ran = (n_vars >= 1) & (n_strata >= 2)
    modified = split_ran & (het < alpha) & (confirmed == n_strata)  # size differs, direction confirmed in each
    split_fail = split_ran & ((same < n_strata) | ((het < alpha) & ~modified) | (rev > 0))
    matched_ran = np.isfinite(agree)
    matched_fail = matched_ran & (agree < MATCHED_AGREEMENT)
    perm_ran = np.isfinite(p_fwe)
    nuis = nuisance != ""
    untested = ~(split_ran & matched_ran & perm_ran)
    explained = ~sig & (q_raw < alpha) & (q_change < alpha) & (share_high < 1.0 - ATTENUATION_EXPLAINED)
    inconclusive = ~sig & (q_raw < alpha) & ~explained

    verdict = np.select(
        [sig & nuis, sig & (split_fail | matched_fail), sig & untested, sig & (p_fwe >= alpha), sig,
         explained, inconclusive],
        ["tracks nuisance", "unstable across splits", "adjusted correlate, robustness untested",
         "adjusted correlate, not family-wise significant", "robust correlate", "confound-explained",
         "inconclusive after adjustment"],
        default="not significant",
    ).astype(object)

    notes = [[] for _ in range(len(df))]

    def add(mask, text):
        for i in np.flatnonzero(mask):
            notes[i].append(text if isinstance(text, str) else text(i))

    add(sig & nuis, lambda i: f"tracks {nuisance[i]}")
    add(sig & split_fail & (same < n_strata), lambda i: f"{int(n_strata[i] - same[i])} of {int(n_strata[i])} strata "
        "with the opposite sign")
    add(sig & split_fail & (het < alpha), "heterogeneous across strata (Cochran's Q)")
    add(sig & modified, lambda i: f"effect size differs across strata (Cochran's Q), significant in the same "
        f"direction in all {int(n_strata[i])} (one-sided, each)")
    add(sig & matched_fail, lambda i: f"matched estimate agrees in {agree[i]:.0%} of matching draws")
    add(sig & ~split_ran, "robustness untested: " + (checks.splits or "no split variable with 2 strata of "
                                                      "enough participants a side"))
    add(sig & ~matched_ran, "robustness untested: " + (checks.matched or "no matched estimate"))
    add(sig & ~perm_ran, "robustness untested: " + (checks.permutation or "no permutation null"))
    add(sig & perm_ran & (p_fwe >= alpha), lambda i: f"family-wise p {p_fwe[i]:.3g} (Freedman-Lane max-T)")
    add(explained, lambda i: f"adjustment significantly reduced the estimate (change test); adjusted estimate at "
        f"most {max(share_high[i], 0):.0%} of the raw one (95% limit)")
    add(inconclusive, "change from adjustment not significant: the adjusted estimate may be too noisy to tell")
    return verdict, np.array(["; ".join(n) for n in notes], dtype=object)
