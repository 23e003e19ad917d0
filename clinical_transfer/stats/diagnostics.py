"""Design diagnostics before any test: coarsen rare confound levels, then ask whether the family can be fitted.

Why: a nearly saturated design lies. A participant alone in a level of a categorical confound (one
person in their collection wave) has a residualised label of exactly zero, so their cluster score is
structurally zero; with many such participants the cluster-robust SE collapses and |t| explodes on
features that carry nothing (a 43-participant, 24-wave corpus gave 1,753 "robust" rows on pure noise).
So, per family: rare levels are merged (ordered levels such as dates into their neighbours, unordered
ones into ``other``), and a family whose design stays thin — too few residual degrees of freedom at the
participant level, or too many structurally-zero cluster scores — is not tested at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinical_transfer.stats.association import confound_basis

OTHER = "other"


def _ordered(levels: list[str]) -> bool:
    """Levels with a natural order (all numbers, or all dates): rare ones merge into a neighbour."""
    if pd.to_numeric(pd.Series(levels), errors="coerce").notna().all():
        return True
    return bool(pd.to_datetime(pd.Series(levels), errors="coerce", format="mixed").notna().all())


def _sort_levels(levels: list[str]) -> list[str]:
    num = pd.to_numeric(pd.Series(levels), errors="coerce")
    if num.notna().all():
        return [levels[i] for i in np.argsort(num.to_numpy(), kind="stable")]
    return sorted(levels)


def coarsen_levels(values: pd.Series, participants: np.ndarray, min_cell: int) -> tuple[pd.Series, str]:
    """Merge levels with fewer than ``min_cell`` participants; returns (new values, what was merged).

    Ordered levels (numbers, dates): the smallest rare level is merged with its smaller neighbour,
    repeatedly, so merged levels are contiguous periods named ``first..last``. Unordered levels: all
    rare levels become ``other``; an ``other`` still below ``min_cell`` joins the smallest large level.
    """
    text = values.astype("string")
    people = pd.DataFrame({"p": participants, "v": text}).dropna()
    counts = people.drop_duplicates().groupby("v")["p"].size()
    levels = [str(v) for v in counts.index]
    if len(levels) < 2 or counts.min() >= min_cell:
        return values, ""
    if _ordered(levels):
        groups = [[lev] for lev in _sort_levels(levels)]
        size = [int(counts[lev]) for lev in _sort_levels(levels)]
        while len(groups) > 1 and min(size) < min_cell:
            i = int(np.argmin(size))
            if i == 0:
                j = 1
            elif i == len(groups) - 1:
                j = i - 1
            else:
                j = i - 1 if size[i - 1] <= size[i + 1] else i + 1
            a, b = sorted((i, j))
            groups[a:b + 1] = [groups[a] + groups[b]]
            size[a:b + 1] = [size[a] + size[b]]
        mapping = {lev: (g[0] if len(g) == 1 else f"{g[0]}..{g[-1]}") for g in groups for lev in g}
    else:
        rare = [lev for lev in levels if counts[lev] < min_cell]
        mapping = {lev: (OTHER if lev in rare else lev) for lev in levels}
        n_other = int(sum(counts[lev] for lev in rare))
        large = [lev for lev in levels if lev not in rare]
        if n_other < min_cell and large:
            target = min(large, key=lambda lev: (counts[lev], lev))
            mapping = {lev: (f"{target}|{OTHER}" if mapping[lev] in (OTHER, target) else mapping[lev]) for lev in levels}
    merged = sorted({v for v in mapping.values() if list(mapping.values()).count(v) > 1})
    new = text.map(lambda v: mapping.get(str(v), v) if pd.notna(v) else v)
    n_before, n_after = len(levels), len(set(mapping.values()))
    what = f"{n_before} levels -> {n_after} (merged: {', '.join(merged)})"
    return new.astype("string"), what


def coarsen_confounds(meta: pd.DataFrame, confounds: list[str], min_cell: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Coarsen every categorical confound of a family (see :func:`coarsen_levels`)."""
    notes: dict[str, str] = {}
    out = meta
    participants = meta["participant_id"].to_numpy()
    for c in confounds:
        s = meta[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        new, what = coarsen_levels(s, participants, min_cell)
        if what:
            out = out.assign(**{c: new})
            notes[c] = what
    return out, notes


@dataclass
class DesignDiagnostics:
    """The size of a family's adjusted design, at the unit that matters (participants)."""

    n_participants: int
    n_recordings: int
    n_params: int
    """Intercept + label + the (rank-kept) confound columns."""
    df_resid: int
    """Participants minus parameters: what the cluster-robust SE has to work with."""
    n_zero_score: int
    """Participants whose residualised label is zero (alone in a confound cell): their score is always 0."""
    coarsened: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    """Why the family is not estimable ('' when it is)."""

    @property
    def estimable(self) -> bool:
        return not self.reason

    def record(self) -> dict:
        return {"n_participants": self.n_participants, "n_recordings": self.n_recordings, "n_params": self.n_params,
                "df_resid": self.df_resid, "n_zero_score": self.n_zero_score,
                "coarsened": "; ".join(f"{k}: {v}" for k, v in self.coarsened.items()),
                "estimable": self.estimable, "reason": self.reason}

    def text(self) -> str:
        s = (f"{self.n_participants} participants, {self.n_params} parameters, {self.df_resid} residual df, "
             f"{self.n_zero_score} structurally-zero participant scores")
        return s + (f"; coarsened {'; '.join(f'{k}: {v}' for k, v in self.coarsened.items())}" if self.coarsened else "")


def diagnose(x: np.ndarray, C: np.ndarray, participants: np.ndarray, min_resid_df: int, max_zero_fraction: float,
             coarsened: dict[str, str] | None = None) -> DesignDiagnostics:
    """Participants, parameters, residual df and structurally-zero scores; a reason when too thin."""
    n = len(x)
    codes, G = pd.factorize(participants)[0], int(pd.unique(participants).size)
    Q = confound_basis(C, n)
    xt = x - Q @ (Q.T @ x)
    n_params = Q.shape[1] + 1
    per = np.bincount(codes, weights=xt * xt, minlength=G)
    scale = max(float(np.max(per)), 1e-300)
    n_zero = int((per <= 1e-10 * scale).sum())
    d = DesignDiagnostics(G, n, n_params, G - n_params, n_zero, dict(coarsened or {}))
    if float(xt @ xt) <= 1e-12 * max(float(x @ x), 1e-300):
        d.reason = "the label is constant once the confounds are accounted for (collinear with them)"
    elif d.df_resid < min_resid_df:
        d.reason = (f"design too thin: {G} participants for {n_params} parameters leave {d.df_resid} residual "
                    f"degrees of freedom (< {min_resid_df})")
    elif n_zero > max_zero_fraction * G:
        d.reason = (f"design too thin: {n_zero} of {G} participants are alone in a confound cell (structurally "
                    f"zero scores; more than {max_zero_fraction:.0%})")
    return d
