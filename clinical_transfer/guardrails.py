"""Non-diagnostic guardrails: the one place every writer goes through.

Why one module: GUARDRAILS.md promises that no output path can skip the rules — the label on every
artifact, pseudonymous ids, small-cell suppression, no audio and no per-person clinical values out.
Writers in this package call :func:`write_table`, :func:`write_text` and :func:`write_json`; nothing
else writes into an output folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BANNER = (
    "NON-DIAGNOSTIC RESEARCH OUTPUT: statistical correlates in a public dataset; "
    "not a medical test, not for clinical decisions."
)
BANNER_KEY = "non_diagnostic"
DEFAULT_MIN_CELL = 10

#: Columns that would identify a person or leak audio; refused by :func:`write_table`.
FORBIDDEN_COLUMNS = frozenset({"source", "audio_sha256", "path", "waveform", "audio"})


def pseudonymise(ids: pd.Series, salt: str, prefix: str = "p") -> pd.Series:
    """Salted SHA-256 pseudonyms (``p_1a2b3c4d5e6f``): stable within a salt, unlinkable without it."""
    if not salt:
        raise ValueError("a non-empty salt is required for pseudonymous ids")
    return ids.astype(str).map(lambda s: f"{prefix}_{hashlib.sha256(f'{salt}:{s}'.encode()).hexdigest()[:12]}")


def _check_columns(df: pd.DataFrame) -> None:
    bad = sorted(FORBIDDEN_COLUMNS & set(df.columns))
    if bad:
        raise ValueError(f"guardrails refuse to write column(s) {bad}: raw paths, audio and audio hashes stay private")


def write_table(df: pd.DataFrame, path: str | Path, formats: tuple[str, ...] = ("csv", "parquet")) -> list[Path]:
    """Write a table as CSV (leading ``# <banner>`` line) and/or Parquet (banner in file metadata).

    The CSV stays readable with ``pandas.read_csv(path, comment="#")``. Output is deterministic: no
    timestamps, rows and columns as given.
    """
    _check_columns(df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if "csv" in formats:
        p = path.with_suffix(".csv")
        with open(p, "w", newline="") as fh:
            fh.write(f"# {BANNER}\n")
            df.to_csv(fh, index=False, lineterminator="\n")
        written.append(p)
    if "parquet" in formats:
        p = path.with_suffix(".parquet")
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), BANNER_KEY.encode(): BANNER.encode()})
        pq.write_table(table, p)
        written.append(p)
    return written


def write_text(text: str, path: str | Path) -> Path:
    """Write a Markdown/text artifact with the banner as its first line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"> **{BANNER}**\n\n{text.rstrip()}\n")
    return path


def write_json(obj: dict, path: str | Path) -> Path:
    """Write a JSON artifact (manifest, summary) with the banner as a field."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({BANNER_KEY: BANNER, **obj}, indent=2, sort_keys=True, default=str) + "\n")
    return path
