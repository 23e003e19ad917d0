"""Negative controls (nuisance tracking) and confirmation of top hits with statsmodels.

Why: a feature that moves with a label may simply track loudness, duration or the recording device;
and a vectorised estimate deserves a second opinion from the textbook models (a mixed model with
participant random intercepts, and the reverse logistic regression) before anyone reads it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from clinical_transfer.stats.association import associate
from clinical_transfer.stats.design import Family

#: Nuisance variables checked by default when the metadata has them.
NUISANCE = ("duration_s", "rms_dbfs", "silence_fraction", "sample_rate_hz", "quality")


def nuisance_associations(fam: Family, F: np.ndarray, features: list[str], names: list[str],
                          cluster: bool = True) -> pd.DataFrame:
    """Partial correlation and p of each feature with each nuisance variable present (no confounds)."""
    out = []
    for name in names:
        if name not in fam.meta.columns:
            continue
        v = pd.to_numeric(fam.meta[name], errors="coerce").to_numpy(float)
        ok = np.isfinite(v)
        if ok.sum() < 3 or np.nanstd(v[ok]) == 0:
            continue
        a = associate(v[ok], F[ok], None, fam.participants[ok] if cluster else None)
        out.append(pd.DataFrame({"feature": features, "nuisance": name, "r": a.partial_r, "p": a.p}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["feature", "nuisance", "r", "p"])


def confirm(fam: Family, F: np.ndarray, C: np.ndarray) -> dict[str, float]:
    """Refit one feature with statsmodels: MixedLM (feature ~ label + confounds | participant) and
    Logit (label ~ standardised feature + confounds, participant-clustered SEs; binary labels only)."""
    import statsmodels.api as sm  # start-up time: ~1 s; only the top hits are refit

    out = {"confirm_mixedlm_beta": np.nan, "confirm_mixedlm_p": np.nan,
           "confirm_logit_coef": np.nan, "confirm_logit_p": np.nan}
    f = np.asarray(F, float)
    exog = np.column_stack([np.ones(len(f)), fam.x, C]) if C.size else np.column_stack([np.ones(len(f)), fam.x])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = sm.MixedLM(f, exog, groups=fam.participants).fit(reml=True)
            out["confirm_mixedlm_beta"], out["confirm_mixedlm_p"] = float(r.params[1]), float(r.pvalues[1])
        except Exception:
            pass
        if fam.binary and np.std(f) > 0:
            z = (f - f.mean()) / f.std()
            ex = np.column_stack([np.ones(len(f)), z, C]) if C.size else np.column_stack([np.ones(len(f)), z])
            codes = pd.factorize(fam.participants)[0]
            try:
                r = sm.Logit(fam.x, ex).fit(disp=0, cov_type="cluster", cov_kwds={"groups": codes})
                out["confirm_logit_coef"], out["confirm_logit_p"] = float(r.params[1]), float(r.pvalues[1])
            except Exception:
                pass
    return out
