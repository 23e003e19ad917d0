"""Correlate overlays: one table per (label, contrast, segment group), every feature at once.

Why a result object: like statsmodels' results, an :class:`OverlayResult` carries everything needed to
report (the overlay, per-stratum splits, controls, a manifest) and knows how to write itself through
the guardrails and summarise itself. The module knows nothing of audio; any feature table works.
:func:`overlay` codes the label, forms the families and collects their tables; fitting is in
:mod:`~clinical_transfer.stats.family`, the checks in :mod:`~clinical_transfer.stats.robustness` and
:mod:`~clinical_transfer.stats.controls`, the verdict ladder in :mod:`~clinical_transfer.stats.verdicts`.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import statsmodels

from clinical_transfer import __version__, guardrails
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import sha256_file
from clinical_transfer.stats.design import Family, LabelSpec, add_age_band, code_label, keep_rows
from clinical_transfer.stats.family import bh, family_key, family_table, suppressed_rows
from clinical_transfer.stats.options import OverlayConfig
from clinical_transfer.stats.verdicts import NO_NUMBERS, VERDICTS

__all__ = ["OverlayConfig", "OverlayResult", "add_run_q", "overlay"]


@dataclass
class OverlayResult:
    """An overlay's tables and manifest; writes and summarises itself."""

    overlay: pd.DataFrame
    splits: pd.DataFrame
    controls: pd.DataFrame
    manifest: dict

    def write(self, out: str | Path) -> list[Path]:
        """Write overlay/splits/controls (CSV + Parquet) and manifest.json through the guardrails."""
        out = Path(out)
        written = guardrails.write_table(self.overlay, out / "overlay")
        written += guardrails.write_table(self.splits, out / "splits", formats=("parquet",))
        written += guardrails.write_table(self.controls, out / "controls", formats=("parquet",))
        tables = {p.name: sha256_file(p) for p in written}
        written.append(guardrails.write_json({**self.manifest, "table_sha256": tables}, out / "manifest.json"))
        return written

    def summary(self) -> str:
        """Verdict counts per family (and the replication rate of the target families), as plain text."""
        lines = []
        rep = replication_text(self.controls)
        for (label, contrast, group), g in self.overlay.groupby(["label", "contrast", "segment_group"], sort=False):
            counts = g["verdict"].value_counts()
            parts = ", ".join(f"{v} {int(counts[v])}" for v in VERDICTS if v in counts)
            extra = rep.get((label, group), "") if (g["role"] == "target").all() else ""
            lines.append(f"{label} [{contrast}] / {group}: {parts}{'; ' + extra if extra else ''}")
        return "\n".join(lines)


def add_run_q(*tables: pd.DataFrame) -> list[pd.DataFrame]:
    """``q_run``: BH over every target row of every family in ``tables`` (beside the per-family ``q_adj``).

    Per-family q answers "which features of this segment group and label"; q_run answers "which findings
    of this whole run", so a reader who scans every family sees the error rate of what they scanned. A
    run with several labels passes all their tables at once; copies are returned.
    """
    outs = [t.copy() for t in tables]
    masks = [(t["role"] == "target").to_numpy() for t in outs]
    p = np.concatenate([t.loc[m, "p_adj"].to_numpy(float) for t, m in zip(outs, masks)]) if outs else np.empty(0)
    q_all = bh(p, "fdr_bh")
    at = 0
    for t, m in zip(outs, masks):
        q = np.full(len(t), np.nan)
        q[m] = q_all[at : at + m.sum()]
        at += int(m.sum())
        t["q_run"] = q
    return outs


def _check_confound_types(meta: pd.DataFrame, confounds: list[str]) -> None:
    """Refuse a confound that is a number column with a few text cells (``unknown``, ``n/a``, ``45y``).

    Why: read as text, such a column is an unordered category, one level per distinct number; the design
    then merges the rare ages into one "other" level
    (:func:`~clinical_transfer.stats.diagnostics.coarsen_levels`) and adjusts for a handful of unrelated
    ages instead of age — with no warning. A few numeric codes among text (a categorical ``wave`` of 1,
    2, ``unknown``) are fine: only a column with more than 10 distinct numbers is taken for a numeric one.
    A category coded with many numbers (date codes) and a few words is refused too; the message says how
    to keep it a category.
    """
    for name in confounds:
        s = meta[name]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        text = s.dropna().astype(str).str.strip()
        text = text[text != ""]
        num = pd.to_numeric(text, errors="coerce")
        words = text[num.isna()]
        if num.nunique() > 10 and len(words):
            examples = ", ".join(repr(w) for w in sorted(set(words))[:3])
            raise ClinicalTransferError(
                f"confound {name!r} holds {num.nunique()} distinct numbers but {len(words)} row(s) hold text "
                f"({examples}); as text, every number would become its own category",
                "make those cells empty (they are then dropped as missing, and counted) or numbers; for a category "
                "coded with numbers (date codes), give every value a text form, e.g. w20200415")


def _validate(features: pd.DataFrame, meta: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    for name, df in (("features", features), ("metadata", meta)):
        if "recording_id" not in df.columns:
            raise ClinicalTransferError(f"the {name} table has no 'recording_id' column",
                                        "add a recording_id column that links features and metadata")
        dup = df["recording_id"][df["recording_id"].duplicated()]
        if len(dup):
            raise ClinicalTransferError(
                f"the {name} table repeats recording_id {dup.iloc[0]!r} ({len(dup)} duplicate row(s))",
                "keep one row per recording",
            )
    for c in columns:
        if c not in meta.columns:
            raise ClinicalTransferError(f"column {c!r} is not in the metadata",
                                        f"use one of: {', '.join(map(str, meta.columns))}")
    names = [c for c in features.columns if c != "recording_id"]
    if not names:
        raise ClinicalTransferError("the features table has no feature columns", "add one numeric column per feature")
    for c in names:
        if not pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]):
            raise ClinicalTransferError(f"feature column {c!r} is not numeric (dtype {features[c].dtype})",
                                        f"convert {c!r} to numbers or drop it from the features table")
    dtypes = {features[c].dtype for c in names}
    dtype = np.float32 if dtypes == {np.dtype(np.float32)} else np.float64
    F = features[names].to_numpy(dtype=dtype)
    if not np.isfinite(F).all():
        bad = names[int(np.flatnonzero(~np.isfinite(F).all(axis=0))[0])]
        raise ClinicalTransferError(f"feature column {bad!r} has NaN or infinite values", "impute or drop them first")
    return F, names


def replication_text(controls: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Per (label, segment group): "replicated r of d discoveries" or why the split could not run."""
    if "kind" not in controls:
        return {}
    out = {}
    for rec in controls[controls["kind"] == "replication"].to_dict("records"):
        n_disc = rec.get("n_discovered")
        if isinstance(n_disc, (int, float)) and np.isfinite(n_disc) and n_disc > 0:
            out[(rec["label"], rec["segment_group"])] = (
                f"replication split: {int(rec['n_replicated'])} of {int(n_disc)} discoveries replicated")
        elif rec.get("reason"):
            out[(rec["label"], rec["segment_group"])] = f"replication split not run: {rec['reason']}"
    return out


def overlay(
    features: pd.DataFrame,
    meta: pd.DataFrame,
    label: str | LabelSpec,
    confounds: list[str] | None = None,
    config: OverlayConfig | None = None,
    **options,
) -> OverlayResult:
    """Confound-controlled correlate overlay of every feature column for one label.

    ``features``: ``recording_id`` + one numeric column per feature. ``meta``: ``recording_id``,
    ``participant_id``, the label, the confounds and the group column. Options are the fields of
    :class:`OverlayConfig`.
    """
    for k in options:
        if k not in OverlayConfig.__dataclass_fields__:
            raise TypeError(f"unknown overlay option {k!r}")
    if confounds is not None:
        options["confounds"] = list(confounds)
    cfg = replace(config or OverlayConfig(), **options)  # a copy: the caller's config is never changed
    if cfg.min_stratum < cfg.min_cell:
        raise ClinicalTransferError(
            f"min_stratum={cfg.min_stratum} is below min_cell={cfg.min_cell}: a stratum that small would publish "
            "a small cell", f"set min_stratum to at least {cfg.min_cell}")
    spec = label if isinstance(label, LabelSpec) else LabelSpec(label)
    meta = add_age_band(meta)
    needed = [spec.column, *cfg.confounds] + [c for c in (cfg.group_col, cfg.cluster_col) if c]
    F_all, names = _validate(features, meta, needed)
    _check_confound_types(meta, list(cfg.confounds))
    if cfg.cluster_col and cfg.cluster_col != "participant_id":
        meta = meta.assign(participant_id=meta[cfg.cluster_col])
    elif "participant_id" not in meta.columns:
        meta = meta.assign(participant_id=meta["recording_id"])
    # align metadata rows to the feature rows
    pos = pd.Index(features["recording_id"]).get_indexer(meta["recording_id"])
    unmatched = int((pos < 0).sum())
    meta = meta[pos >= 0].reset_index(drop=True)
    pos = pos[pos >= 0]
    if not len(pos):
        raise ClinicalTransferError("no recording_id is shared by the features and the metadata",
                                    "check that both tables use the same recording ids")
    group_values = meta[cfg.group_col].astype("string") if cfg.group_col else None
    groups = ["all"] if group_values is None else sorted(group_values.dropna().unique())
    tables, split_tables, controls = [], [], []
    for role, lab in [("target", spec)] + [("positive_control", LabelSpec(c)) for c in cfg.positive_controls
                                             if c in meta.columns and c != spec.column]:
        try:
            coded = code_label(meta, lab)
        except ClinicalTransferError as exc:
            if role == "target" and cfg.strict:
                raise
            if role == "target":  # not strict: every group is reported as suppressed, with the reason
                contrast = " vs ".join(["|".join(lab.positive), "|".join(lab.negative)]) if lab.positive else "not formed"
                tables += [suppressed_rows(lab.column, contrast, g, names, role, f"suppressed: {exc.problem}")
                           for g in groups]
            continue
        fam_conf = [c for c in cfg.confounds if c != lab.column and not (lab.column == "age" and c == "age_band")]
        for group in groups:
            in_group = np.ones(len(meta), bool) if group_values is None else (
                group_values == group).fillna(False).to_numpy()
            keep, dropped = keep_rows(meta, np.where(in_group, coded.x, np.nan), fam_conf)
            dropped.pop("label outside the contrast or missing", None)
            fam = Family(lab.column, coded.contrast, group, coded.binary, pos[keep], coded.x[keep],
                         meta[keep].reset_index(drop=True), fam_conf, dropped)
            rows_all = len(fam.rows) == F_all.shape[0] and np.array_equal(fam.rows, np.arange(F_all.shape[0]))
            F = F_all if rows_all else F_all[fam.rows]
            try:
                t, s, c = family_table(fam, F, names, cfg, role, full=(role == "target"))
            except ClinicalTransferError as exc:
                if cfg.strict and role == "target" and "too few participants" in exc.problem:
                    raise
                if cfg.strict and role == "target":
                    raise ClinicalTransferError(
                        f"{cfg.group_col or 'group'} {group!r} cannot be fitted for label {lab.column!r}: {exc.problem}",
                        f"drop group {group!r} (or pool more data), or pass --allow-small-groups to record it as suppressed",
                    ) from exc
                t, s, c = suppressed_rows(lab.column, coded.contrast, group, names, role,
                                           f"suppressed: cannot be fitted ({exc.problem})"), pd.DataFrame(), []
            tables.append(t)
            split_tables.append(s)
            controls += c
            controls.append({"kind": "inclusion", **family_key(fam), "role": role,
                             "n_recordings": len(fam.x) if t["verdict"].iloc[0] not in NO_NUMBERS else np.nan,
                             "dropped": "; ".join(f"{k}: {v}" for k, v in dropped.items())})
            if role == "positive_control" and t["verdict"].iloc[0] not in NO_NUMBERS:
                controls.append({"kind": "positive_control", **family_key(fam),
                                 "n_significant": int((t["q_adj"] < cfg.alpha).sum()),
                                 "max_abs_t": float(np.nanmax(np.abs(t["t_adj"]))),
                                 "top_feature": t.loc[t["p_adj"].idxmin(), "feature"]})
    overlay_df = add_run_q(pd.concat(tables, ignore_index=True))[0]
    splits_df = pd.concat([s for s in split_tables if not s.empty], ignore_index=True) if any(
        not s.empty for s in split_tables) else pd.DataFrame(columns=["label", "contrast", "segment_group", "feature"])
    controls_df = pd.DataFrame(controls)
    manifest = {
        "label": asdict(spec), "options": asdict(cfg), "n_features": len(names),
        "n_metadata_rows_without_features": unmatched,
        "versions": {"clinical_transfer": __version__, "python": platform.python_version(),
                     "numpy": np.__version__, "pandas": pd.__version__,
                     "statsmodels": statsmodels.__version__, "scipy": scipy.__version__},
        "seed": cfg.seed,
    }
    return OverlayResult(overlay_df, splits_df, controls_df, manifest)
