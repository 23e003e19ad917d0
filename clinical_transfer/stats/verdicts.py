"""Verdicts: the one place that turns a family's estimates and checks into a word per feature.

Per feature (α = ``alpha``, q = Benjamini–Hochberg within the family):

* ``suppressed`` — a side of the contrast has fewer than ``min_cell`` participants (no numbers shown);
* ``robust correlate`` — q_adj < α, no significant heterogeneity across confound strata (Cochran's Q,
  Bonferroni over split variables), no stratum with a significant estimate of the opposite sign, and —
  where the exactly matched subset could be formed — the overlay re-run on it finds the feature too
  (q_matched < α, BH over the whole family, same sign);
* ``unstable across splits`` — q_adj < α but heterogeneous or reversed in some stratum, or not
  reproduced on the matched subset (adjustment is linear and additive; matching is not, so a hit that
  vanishes once the groups are balanced within strata is treated as residual confounding);
* ``confound-explained`` — q_raw < α unadjusted, q_adj ≥ α after adjustment, and adjustment removed at
  least half of the effect (attenuation ≥ 0.5; a borderline feature whose estimate did not shrink is
  ``not significant``, not explained);
* ``not significant`` — otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ATTENUATION_EXPLAINED = 0.5
VERDICTS = ("robust correlate", "confound-explained", "unstable across splits", "not significant", "suppressed")


def verdicts(df: pd.DataFrame, alpha: float) -> np.ndarray:
    q_adj, q_raw = df["q_adj"].to_numpy(float), df["q_raw"].to_numpy(float)
    het = df["heterogeneity_p"].to_numpy(float)
    rev = df["n_strata_reversed"].to_numpy(float, na_value=0.0)
    att = df["attenuation"].to_numpy(float)
    q_m, b_m = df["q_matched"].to_numpy(float), df["beta_matched"].to_numpy(float)
    b_adj = df["beta_adj"].to_numpy(float)
    sig = q_adj < alpha
    # No matched subset for this family (continuous label, too few participants): nothing to check.
    matched = df["n_participants_matched"].notna().to_numpy()
    not_reproduced = matched & ~((q_m < alpha) & (np.sign(b_m) == np.sign(b_adj)))
    unstable = sig & ((het < alpha) | (rev > 0) | not_reproduced)
    explained = ~sig & (q_raw < alpha) & (att >= ATTENUATION_EXPLAINED)
    return np.select(
        [sig & ~unstable, unstable, explained],
        ["robust correlate", "unstable across splits", "confound-explained"],
        default="not significant",
    )
