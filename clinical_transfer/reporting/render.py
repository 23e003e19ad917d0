"""The Markdown run report: provenance, inclusion counts, positive controls first, then each label.

Why this order: a reader must see where the data came from and what was excluded, then proof that the
machinery finds what it should (age, sex), before any clinical label. Every number shown is a group-level
statistic; feature names are neutral indices; the banner and the limitations link are always present.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clinical_transfer import guardrails

TOP_N = 5


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [(str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.3g}") if isinstance(v, float)
                 else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _verdicts(overlay: pd.DataFrame) -> pd.DataFrame:
    counts = overlay.groupby(["segment_group", "verdict"]).size().unstack(fill_value=0)
    return counts.reset_index()


def _top(overlay: pd.DataFrame, verdict: str) -> pd.DataFrame:
    rows = overlay[overlay["verdict"] == verdict].sort_values(["segment_group", "p_adj"]).groupby("segment_group").head(TOP_N)
    cols = ["segment_group", "feature", "beta_raw", "beta_adj", "attenuation", "q_adj", "auroc", "auroc_low",
            "auroc_high", "n_strata", "n_strata_same_sign", "p_matched"]
    return rows[[c for c in cols if c in rows.columns]]


def render_markdown(run: dict, out: str | Path) -> Path:
    """Write ``REPORT.md`` for a run (see :func:`clinical_transfer.pipeline.run_overlay` for ``run``)."""
    inv = run["inventory"]
    parts = [
        f"# Correlate overlay report — {run['dataset']}",
        "",
        "Correlates of labels with features of a frozen audio model, after confound controls. No statement "
        "here is about any person; feature ids are neutral indices, not names. Read LIMITATIONS.md "
        "(beside the clinical-transfer README) before interpreting anything.",
        "",
        "## Data provenance and inclusion",
        f"- corpus: {run['dataset']} ({run['corpus_note']})",
        f"- participants: {inv['n_participants']}; recordings expected: {inv['n_recordings']}; "
        f"scored: {run['scoring']['scored']}",
        f"- encoder: {run['encoder']} layer {run['layer']} ({run['layer_convention']})",
        f"- SAE: {run['sae']}; score tested per recording: {run['aggregation']}",
        f"- confounds adjusted: {', '.join(run['confounds'])}; split variables: {', '.join(run['strata'])}",
        "",
        "Exclusions by reason (recordings):",
        "",
        _table(inv["excluded"]),
        "Prompted speech (counting), sustained vowels, coughs and breaths are analysed separately and never "
        "pooled: prompted-task features can reflect the task, language or reading style.",
        "",
        "## Positive controls (age, sex)",
        "Age and sex should give strong, stable overlays; they show the machinery works.",
        "",
    ]
    pc = run["positive_controls"]
    parts.append(_table(pc) if not pc.empty else "_positive controls not available in this corpus_\n")
    for label, overlay in run["overlays"].items():
        target = overlay[overlay["role"] == "target"]
        contrast = target["contrast"].iloc[0] if len(target) else ""
        parts += [f"## {label} ({contrast})", ""]
        if label in run.get("missing_as", {}):
            parts += [f"Blank answers of `{label}` were analysed as `{run['missing_as'][label]}` (not reported), "
                      "not as unknown.", ""]
        parts += ["Verdicts per segment group (features):", "", _table(_verdicts(target)),
                  "Robust correlates (adjusted q < alpha, stable across confound splits; top 5 per group):", "",
                  _table(_top(target, "robust correlate")),
                  "Confound-explained (significant unadjusted, not after adjustment; top 5 per group):", "",
                  _table(_top(target, "confound-explained"))]
        null = run["nulls"].get(label)
        if null is not None and not null.empty:
            parts += ["Stratified permutation null:", "", _table(null)]
        note = target.loc[target["verdict"] == "suppressed", "note"]
        if len(note):
            parts += [f"Suppressed groups: {', '.join(sorted(set(target.loc[note.index, 'segment_group'])))} — "
                      f"{note.iloc[0]}", ""]
    parts += ["## Limitations", "",
              "These are statistical correlates in one public corpus: self-reported labels, recruitment and "
              "collection-wave confounds, prompted-task artifacts, frozen research models. Cells with fewer than "
              f"{run['min_cell']} participants are suppressed. See LIMITATIONS.md."]
    return guardrails.write_text("\n".join(parts), Path(out) / "REPORT.md")
