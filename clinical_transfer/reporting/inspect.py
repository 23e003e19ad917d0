"""A terminal view of a run folder (rich tables): what a researcher checks first.

Only group-level statistics are shown, with the non-diagnostic label on top.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from clinical_transfer import guardrails
from clinical_transfer.errors import ClinicalTransferError, named, reading
from clinical_transfer.reporting.freeze import RERUN

COLUMNS = ("segment_group", "feature", "beta_raw", "beta_adj", "attenuation", "q_adj", "auroc", "n_strata",
           "n_strata_same_sign", "heterogeneity_p", "verdict")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else (str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:.3g}")
    return "" if v is None or v is pd.NA else str(v)


def _table(df: pd.DataFrame, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for c in df.columns:
        t.add_column(c)
    for row in df.itertuples(index=False):
        t.add_row(*[_fmt(v) for v in row])
    return t


def _overlay(run: Path, label: str) -> pd.DataFrame:
    path = run / "overlays" / label / "overlay.parquet"
    if not path.is_file() and path.parent.is_dir():
        raise ClinicalTransferError(f"overlays/{label} in {run} has no overlay.parquet (the run stopped before "
                                    "writing it, or it was deleted)", RERUN)
    if not path.is_file():
        have = sorted(p.parent.name for p in (run / "overlays").glob("*/overlay.parquet"))
        raise ClinicalTransferError(f"no overlay for label {label!r} in {run}", f"use one of: {', '.join(have) or 'none'}")
    with reading(f"the run folder {run}", RERUN):
        return named(path, pd.read_parquet)


def inspect_run(run: str | Path, label: str | None = None, group: str | None = None, feature: str | None = None,
                top: int = 10, console: Console | None = None) -> None:
    run = Path(run)
    if not (run / "overlays").is_dir():
        raise ClinicalTransferError(f"{run} is not a run folder (no overlays/)", "pass the --out folder of run-overlay")
    con = console or Console(width=160)
    con.print(f"[bold]{guardrails.BANNER}[/bold]")
    labels = [label] if label else sorted(p.name for p in (run / "overlays").iterdir() if p.is_dir())
    for lab in labels:
        t = _overlay(run, lab)
        t = t[t["role"] == "target"]
        if group:
            t = t[t["segment_group"] == group]
        if feature:
            row = t[t["feature"] == feature]
            con.print(_table(row[[c for c in COLUMNS if c in row.columns]], f"{lab}: {feature}"))
            with reading(f"the run folder {run}", RERUN):
                splits = named(run / "overlays" / lab / "splits.parquet", pd.read_parquet)
            if "feature" in splits.columns:
                s = splits[(splits["feature"] == feature) & (splits["label"] == lab)]
                if group:
                    s = s[s["segment_group"] == group]
                cols = ["segment_group", "split_variable", "stratum", "n_participants", "beta", "se", "p"]
                con.print(_table(s[[c for c in cols if c in s.columns]], f"{lab}: {feature} per confound split"))
            continue
        counts = t.groupby(["segment_group", "verdict"]).size().unstack(fill_value=0).reset_index()
        con.print(_table(counts, f"{lab} [{t['contrast'].iloc[0] if len(t) else ''}]: verdicts per segment group"))
        if label:
            for verdict in ("robust correlate", "confound-explained"):
                sub = t[t["verdict"] == verdict].sort_values("p_adj").groupby("segment_group").head(top)
                con.print(_table(sub[[c for c in COLUMNS if c in sub.columns]], f"{lab}: top {verdict}"))
