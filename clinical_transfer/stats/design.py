"""Design matrices: label coding, confound columns, clusters and the rows each family keeps.

Why separate: every estimate (adjusted, unadjusted, per stratum, matched, permuted) must see the same
coding of the label and confounds, and every dropped row must be counted with its reason.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinical_transfer.errors import ClinicalTransferError

_TRUE = {"true", "1", "y", "yes"}
_FALSE = {"false", "0", "n", "no"}


@dataclass(frozen=True)
class LabelSpec:
    """Which label, and which of its values form the positive and negative side of the contrast.

    Values may use shell wildcards (``positive_*``). Without values, a boolean/yes-no label is
    True vs False, a numeric label with more than two values is continuous (per unit), and a label
    with exactly two values contrasts the first (sorted) against the second.
    """

    column: str
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()


@dataclass
class Coded:
    """A label coded for one set of rows."""

    x: np.ndarray  # float (0/1 or continuous), NaN where the row is outside the contrast
    contrast: str
    binary: bool


def _as_text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def code_label(meta: pd.DataFrame, spec: LabelSpec) -> Coded:
    """Code ``spec.column`` of ``meta`` as x (1 positive / 0 negative / NaN outside, or continuous)."""
    col = spec.column
    if col not in meta.columns:
        raise ClinicalTransferError(f"label column {col!r} is not in the metadata",
                                    f"use one of: {', '.join(map(str, meta.columns))}")
    raw = meta[col]
    text = _as_text(raw)
    present = text.dropna()
    if spec.positive or spec.negative:
        if not (spec.positive and spec.negative):
            raise ClinicalTransferError(f"label {col!r}: a contrast needs both --positive and --negative values",
                                        "pass both, e.g. --positive 'positive_*' --negative healthy")

        def match(patterns):
            return text.map(lambda v: pd.notna(v) and any(fnmatch.fnmatchcase(v, p) for p in patterns)).astype(bool)

        pos, neg = match(spec.positive), match(spec.negative)
        both = pos & neg
        if both.any():
            raise ClinicalTransferError(f"label {col!r}: value(s) {sorted(set(text[both]))} match both sides",
                                        "make --positive and --negative disjoint")
        for side, mask, pats in (("positive", pos, spec.positive), ("negative", neg, spec.negative)):
            if not mask.any():
                raise ClinicalTransferError(
                    f"label {col!r}: no row matches the {side} value(s) {list(pats)} "
                    f"(values present: {', '.join(sorted(set(present))[:12])})",
                    f"pass --{side} values that occur in column {col!r}",
                )
        x = np.where(pos, 1.0, np.where(neg, 0.0, np.nan))
        return Coded(x, f"{'|'.join(spec.positive)} vs {'|'.join(spec.negative)}", True)
    levels = sorted(set(present))
    if len(levels) < 2:
        raise ClinicalTransferError(
            f"label {col!r} has {len(levels)} level(s) in the data ({', '.join(levels) or 'none'}); "
            "a contrast needs two",
            f"choose another label, or check that column {col!r} is filled in",
        )
    lower = {v.lower() for v in levels}
    if lower <= _TRUE | _FALSE and lower & _TRUE and lower & _FALSE:
        low = text.str.lower()
        x = np.where(low.isin(_TRUE), 1.0, np.where(low.isin(_FALSE), 0.0, np.nan))
        return Coded(x, "True vs False", True)
    numeric = pd.to_numeric(raw, errors="coerce")
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw) and len(levels) > 2:
        return Coded(numeric.to_numpy(dtype=float, na_value=np.nan), "per unit", False)
    if len(levels) == 2:
        first, second = ((text == v).fillna(False).to_numpy(bool) for v in levels)  # missing: outside
        x = np.where(first, 1.0, np.where(second, 0.0, np.nan))
        return Coded(x, f"{levels[0]} vs {levels[1]}", True)
    raise ClinicalTransferError(
        f"label {col!r} has {len(levels)} levels ({', '.join(levels[:8])}{'...' if len(levels) > 8 else ''})",
        "pass --positive and --negative to define a two-sided contrast",
    )


def confound_columns(meta: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Numeric confounds centred; booleans 0/1; categoricals one-hot against their first sorted level.

    Rows with a missing confound must already be dropped (see :func:`keep_rows`).
    """
    blocks, labels = [], []
    for name in names:
        s = meta[name]
        if pd.api.types.is_bool_dtype(s):
            v = s.astype(float).to_numpy()
            blocks.append((v - v.mean())[:, None])
            labels.append(name)
        elif pd.api.types.is_numeric_dtype(s):
            v = s.astype(float).to_numpy()
            blocks.append((v - v.mean())[:, None])
            labels.append(name)
        else:
            text = _as_text(s)
            levels = sorted(set(text.dropna()))
            for lev in levels[1:]:
                blocks.append((text == lev).to_numpy(dtype=float)[:, None])
                labels.append(f"{name}[{lev}]")
    if not blocks:
        return np.zeros((len(meta), 0)), []
    return np.hstack(blocks), labels


@dataclass
class Family:
    """The rows of one (label, contrast, segment group) family, coded and ready to fit."""

    label: str
    contrast: str
    segment_group: str
    binary: bool
    rows: np.ndarray  # indices into the aligned feature matrix
    x: np.ndarray
    meta: pd.DataFrame  # the kept metadata rows (aligned with x)
    confounds: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def participants(self) -> np.ndarray:
        return self.meta["participant_id"].to_numpy()

    def n_participants(self, side: float | None = None) -> int:
        if side is None:
            return int(pd.unique(self.participants).size)
        return int(pd.unique(self.participants[self.x == side]).size)


def smallest_side(participants: np.ndarray, x: np.ndarray, binary: bool) -> int:
    """Participants on the smaller side of a contrast (binary), or all participants (continuous): the n
    that every small-cell and subset rule reads."""
    if not binary:
        return int(pd.unique(participants).size)
    return int(min(pd.unique(participants[x == 1]).size, pd.unique(participants[x == 0]).size))


def keep_rows(meta: pd.DataFrame, x: np.ndarray, confounds: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Rows with a label value in the contrast and every confound present; counts of the rest by reason."""
    keep = ~np.isnan(x)
    dropped = {"label outside the contrast or missing": int((~keep).sum())}
    for c in confounds:
        miss = meta[c].isna().to_numpy() & keep
        dropped[f"missing confound {c}"] = int(miss.sum())
        keep &= ~miss
    return keep, {k: v for k, v in dropped.items() if v}


def add_age_band(meta: pd.DataFrame, age_col: str = "age") -> pd.DataFrame:
    """Add ``age_band`` (10-year bands such as ``20-29``) when an age column exists."""
    if age_col in meta.columns and "age_band" not in meta.columns:
        age = pd.to_numeric(meta[age_col], errors="coerce")
        lo = (age // 10 * 10).astype("Int64")
        meta = meta.assign(age_band=lo.astype("string") + "-" + (lo + 9).astype("string"))
    return meta
