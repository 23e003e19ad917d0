"""Non-diagnostic guardrails: the one place every writer goes through.

Why one module: GUARDRAILS.md promises that no output path can skip the rules — the label on every
artifact, pseudonymous ids, small-cell suppression, no audio and no per-person clinical values out.
Writers in this package call :func:`write_table`, :func:`write_text` and :func:`write_json`; nothing
else writes into an output folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clinical_transfer.hashing import pseudonym

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
    return ids.astype(str).map(lambda s: pseudonym(salt, s, prefix))


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


# -- correlate wording ---------------------------------------------------------------------------
#: Words that make a feature label read like a diagnosis (GUARDRAILS.md rule 5).
DIAGNOSTIC_TERMS = re.compile(
    r"(?:diagnos\w*|detect\w*|predict\w*|screen\w*|biomarker\w*|disease\w*|disorder\w*|covid\w*|sars\b|corona\w*|"
    r"asthma\w*|pneumonia|diabet\w*|copd|tubercul\w*|parkinson\w*|alzheimer\w*|cancer\w*|hypertensi\w*|"
    r"depress\w*|dementia|infect\w*|patholog\w*)",
    re.IGNORECASE,
)


def audit_feature_labels(labels: pd.DataFrame, label_column: str, dataset: str, segment_group: str) -> pd.DataFrame:
    """Rewrite disease-like feature labels (e.g. an imported atlas label table joined by feature id).

    Returns ``feature``, ``feature_label`` (safe), ``feature_label_original`` and ``label_flagged``.
    """
    out = labels[["feature", "feature_label"]].copy()
    out["feature_label_original"] = out["feature_label"].astype(str)
    flagged = out["feature_label_original"].str.contains(DIAGNOSTIC_TERMS)
    out["label_flagged"] = flagged
    out.loc[flagged, "feature_label"] = f"correlate of {label_column} in {dataset} ({segment_group})"
    return out


# -- the run audit ---------------------------------------------------------------------------------
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".webm", ".m4a", ".npy")
SYNTHETIC_SOURCE = "synthetic demo audio"
"""PNG ``Source`` of a picture of audio (top-activating frames): allowed only in a run on the demo corpus."""
AUDIO_PICTURES = ("top_frames",)
"""File-name stems of pictures drawn from audio."""


def _is_demo_run(run_dir: Path) -> bool:
    """Whether the run folder's manifest says it ran on the synthetic demo corpus."""
    try:
        return bool(json.loads((run_dir / "run_manifest.json").read_text()).get("demo"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def audit_run(run_dir: str | Path, raw_ids: list[str] | None = None, min_cell: int = DEFAULT_MIN_CELL) -> list[str]:
    """Re-check every file of a run folder against the guardrails; returns the violations (empty = pass)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    ids = [i for i in (raw_ids or []) if len(i) >= 8]
    demo_run = _is_demo_run(run_dir)  # read once: every picture of audio is judged against it
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(run_dir)
        if f.suffix.lower() in AUDIO_SUFFIXES:
            problems.append(f"{rel}: audio or per-recording arrays must not be in a run folder")
            continue
        if f.suffix == ".csv":
            text = f.read_text(errors="replace")
            if not text.startswith(f"# {BANNER}"):
                problems.append(f"{rel}: CSV does not start with the non-diagnostic label")
        elif f.suffix in (".md", ".html", ".json", ".txt"):
            text = f.read_text(errors="replace")
            if BANNER not in text:
                problems.append(f"{rel}: the non-diagnostic label is missing")
            if f.suffix == ".json":
                try:
                    problems += _json_problems(json.loads(text), rel, min_cell)
                except json.JSONDecodeError:
                    problems.append(f"{rel}: not valid JSON")
        elif f.suffix == ".parquet":
            meta = pq.read_schema(f).metadata or {}
            if meta.get(BANNER_KEY.encode()) != BANNER.encode():
                problems.append(f"{rel}: Parquet metadata lacks the non-diagnostic label")
            table = pd.read_parquet(f)
            text = table.to_csv(index=False)
            problems += _table_problems(table, rel, min_cell)
        elif f.suffix == ".png":
            info = Image.open(f).info
            if info.get("Description") != BANNER:
                problems.append(f"{rel}: figure lacks the non-diagnostic label")
            if (info.get("Source") or f.stem in AUDIO_PICTURES) and not (
                    info.get("Source") == SYNTHETIC_SOURCE and demo_run):
                problems.append(f"{rel}: a picture of audio in a run that is not on the synthetic demo corpus "
                                "(a spectrogram of a real recording may not be written)")
            continue
        else:
            continue
        hit = next((i for i in ids if i in text), None)
        if hit:
            problems.append(f"{rel}: contains a raw corpus id ({hit[:4]}...)")
    return problems


#: Keys that would carry a person's audio (or a picture of it) inside a JSON output.
AUDIO_KEYS = ("waveform", "audio", "samples", "spectrogram", "mel", "pcm")


def _json_problems(obj, rel: Path, min_cell: int) -> list[str]:
    """Small cells, diagnosis-like feature labels and audio-like payloads anywhere in a JSON output
    (evidence packets, manifests): every dict is checked, at any depth."""
    out: list[str] = []

    def walk(node, root: bool = False) -> None:
        if isinstance(node, dict):
            n = node.get("n_participants")  # a cell's count; the top level's is the corpus total (not a cell)
            if (not root and isinstance(n, (int, float)) and not isinstance(n, bool) and n < min_cell
                    and not node.get("suppressed")):
                out.append(f"{rel}: a cell reports n_participants {n} < {min_cell} without suppression")
            label = node.get("feature_label")
            if isinstance(label, str) and DIAGNOSTIC_TERMS.search(label):
                out.append(f"{rel}: feature label reads like a diagnosis ({label!r})")
            bad = [k for k, v in node.items() if str(k).lower() in AUDIO_KEYS and isinstance(v, (list, str))
                   and len(v) > 64]  # a payload (samples, pixels, base64), not a config section or a hash
            if bad:
                out.append(f"{rel}: audio-like field {bad[0]!r} (no audio or spectrogram of a recording may be written)")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(obj, root=True)
    return out


def _table_problems(df: pd.DataFrame, rel: Path, min_cell: int) -> list[str]:
    out = []
    if "verdict" in df.columns:
        live = df[df["verdict"] != "suppressed"]
    else:
        live = df
    for col in ("n_participants_pos", "n_participants_neg", "n_participants"):
        if col in live.columns:
            n = pd.to_numeric(live[col], errors="coerce")
            small = int((n < min_cell).sum())
            if small:
                out.append(f"{rel}: {small} row(s) report {col} < {min_cell} without suppression")
    for col in ("feature", "feature_label"):
        if col in live.columns:
            bad = live[col].astype(str).str.contains(DIAGNOSTIC_TERMS)
            if bad.any():
                out.append(f"{rel}: feature name(s) read like a diagnosis, e.g. {live[col][bad].iloc[0]!r}")
    return out
