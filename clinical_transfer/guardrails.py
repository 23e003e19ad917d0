"""Non-diagnostic guardrails: the one place every writer goes through.

Why one module: GUARDRAILS.md promises that no output path can skip the rules — the label on every
artifact, pseudonymous ids, small-cell suppression, no audio and no per-person clinical values out.
Writers in this package call :func:`write_table`, :func:`write_text` and :func:`write_json`; nothing
else writes into an output folder.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import pseudonym

BANNER = (
    "NON-DIAGNOSTIC RESEARCH OUTPUT: statistical correlates in a public dataset; "
    "not a medical test, not for clinical decisions."
)
BANNER_KEY = "non_diagnostic"
DEFAULT_MIN_CELL = 10

#: Columns that would identify a person or leak audio; refused by :func:`write_table`.
FORBIDDEN_COLUMNS = frozenset({"source", "audio_sha256", "path", "waveform", "audio"})


#: The placeholder salt shipped in the corpus configs: never a salt for a real corpus.
PLACEHOLDER_SALT = "replace-with-a-private-salt"
#: Shortest salt accepted: shorter ones (``--salt s``) are found by a dictionary search over the public ids.
MIN_SALT_LENGTH = 16


def check_salt(salt: str | None) -> str:
    """The salt, or one actionable error when it is missing, the shipped placeholder, or too short."""
    how = ("pass --salt-file FILE or set CLINICAL_TRANSFER_SALT (out of your shell history), or --salt, "
           f"with a private value of {MIN_SALT_LENGTH}+ characters, e.g. from: python -c "
           "'import secrets; print(secrets.token_urlsafe(24))'")
    if not salt:
        raise ClinicalTransferError("no salt for pseudonymous ids", how)
    if salt == PLACEHOLDER_SALT:
        raise ClinicalTransferError("the salt is the shipped placeholder (anyone could undo the pseudonyms)", how)
    if len(salt) < MIN_SALT_LENGTH:
        raise ClinicalTransferError(f"the salt has {len(salt)} characters; at least {MIN_SALT_LENGTH} are needed "
                                    "(a short salt is found by a dictionary search over the public ids)", how)
    return salt


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
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".webm", ".m4a", ".npy", ".npz", ".aiff", ".aif", ".opus")
#: Verdicts whose rows must carry no numbers (whole family suppressed or not estimable), and the text
#: columns such a row keeps.
NO_NUMBER_VERDICTS = ("suppressed", "not estimable")
NO_NUMBER_TEXT = ("label", "contrast", "segment_group", "feature", "feature_label", "role", "verdict", "note",
                  "nuisance_flag", "dataset", "encoder", "layer", "aggregation", "stability", "decoder_norm")
"""(``stability`` and ``decoder_norm`` describe the feature, not the people.)"""
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


#: Leading bytes of files that must never be in a run folder, whatever their name: audio, NumPy arrays,
#: archives (an ``.npz`` cache entry is a zip; ``.wav.gz`` a gzip).
FORBIDDEN_MAGIC = (
    (b"RIFF", "audio (RIFF/WAV)"), (b"fLaC", "audio (FLAC)"), (b"OggS", "audio (Ogg)"), (b"ID3", "audio (MP3)"),
    (b"\xff\xfb", "audio (MP3)"), (b"\xff\xf3", "audio (MP3)"), (b"\xff\xf2", "audio (MP3)"),
    (b"FORM", "audio (AIFF)"), (b"\x1a\x45\xdf\xa3", "audio (WebM/Matroska)"), (b"\x93NUMPY", "a NumPy array"),
    (b"PK\x03\x04", "a zip archive (e.g. .npz)"), (b"\x1f\x8b", "a gzip archive"), (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"), (b"\x28\xb5\x2f\xfd", "a zstd archive"),
)
#: Words that name a feature after a disease in running text ("covid detector", "asthma neuron").
_DISEASES = (r"(?:covid\w*|sars\w*|corona\w*|asthma\w*|pneumonia|diabet\w*|copd|tubercul\w*|parkinson\w*|"
             r"alzheimer\w*|cancer\w*|dementia|depress\w*|infect\w*|disease\w*)")
DIAGNOSTIC_PHRASES = re.compile(
    rf"\b{_DISEASES}[\s_-]*(?:detector|detecting|feature|neuron|latent|unit|marker|biomarker|classifier|predictor|"
    rf"signature|score|risk)\b|\b(?:detects?|predicts?|diagnoses|screens? for)\s+{_DISEASES}",
    re.IGNORECASE,
)
#: Column names that identify a person (a table with one row per value of one of these is per person).
PERSON_COLUMNS = ("participant_id", "participant", "person", "subject", "subject_id", "pid", "patient", "id", "uuid")


def _sniff(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head[257:262] == b"ustar":
        return "forbidden:a tar archive"
    for magic, what in FORBIDDEN_MAGIC:
        if head.startswith(magic):
            return f"forbidden:{what}"
    return "text"


def _visible_top(text: str, suffix: str) -> str:
    """The first visible text of a file: HTML comments, scripts and styles removed, tags stripped."""
    if suffix in (".html", ".htm") or text.lstrip().startswith("<"):
        text = re.sub(r"<!--.*?-->|<script.*?</script>|<style.*?</style>", " ", text, flags=re.S | re.I)
        text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:600]


def _csv_table(text: str) -> pd.DataFrame | None:
    """A delimited text as a table (banner comment skipped), or None when it is not one."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 2:
        return None
    sep = "\t" if lines[0].count("\t") > lines[0].count(",") else ","
    if lines[0].count(sep) == 0:
        return None
    try:
        return pd.read_csv(io.StringIO("\n".join(lines)), sep=sep, dtype=str, keep_default_na=False)
    except Exception:  # noqa: BLE001 - not a table: checked as text only
        return None


def audit_run(run_dir: str | Path, raw_ids: list[str] | None = None, min_cell: int = DEFAULT_MIN_CELL) -> list[str]:
    """Re-check every file of a run folder against the guardrails; returns the violations (empty = pass).

    Every file is judged by its content, never by its name: magic bytes find audio, arrays and archives
    under any extension; Parquet cells *and* schema metadata, PNG text chunks and any other file decoded
    leniently as text are searched for raw ids; tables (Parquet, or any text that parses as CSV/TSV) get
    the small-cell, suppression, wording and per-person rules; the banner must be visible text at the top
    (an HTML comment does not count). Symlinks are refused (they can point at anything).
    """
    run_dir = Path(run_dir)
    problems: list[str] = []
    ids = [i for i in (raw_ids or []) if len(i) >= 8]
    demo_run = _is_demo_run(run_dir)  # read once: every picture of audio is judged against it
    files = []
    for folder, dirs, names in os.walk(run_dir, followlinks=False):
        for name in sorted(dirs + names):
            path = Path(folder) / name
            if path.is_symlink():
                problems.append(f"{path.relative_to(run_dir)}: a symbolic link (a run folder holds its own files only)")
            elif name in names:
                files.append(path)
    for f in sorted(files):
        rel = f.relative_to(run_dir)
        try:
            data = f.read_bytes()
        except OSError as exc:
            problems.append(f"{rel}: cannot be read ({exc.strerror})")
            continue
        kind = _sniff(data[:512])
        if kind.startswith("forbidden:") or f.suffix.lower() in AUDIO_SUFFIXES:
            what = kind.split(":", 1)[1] if kind.startswith("forbidden:") else "audio or per-recording arrays"
            problems.append(f"{rel}: {what} must not be in a run folder")
            continue
        searchable = ""
        if f.suffix.lower() == ".parquet" and kind != "parquet":
            problems.append(f"{rel}: not a Parquet file (damaged or replaced)")
            continue
        if kind == "parquet":
            try:
                schema = pq.read_schema(f)
                table = pd.read_parquet(f)
            except Exception as exc:  # noqa: BLE001 - a damaged file is a finding, not a crash
                problems.append(f"{rel}: unreadable Parquet ({type(exc).__name__})")
                continue
            meta = schema.metadata or {}
            if meta.get(BANNER_KEY.encode()) != BANNER.encode():
                problems.append(f"{rel}: Parquet metadata lacks the non-diagnostic label")
            searchable = table.to_csv(index=False) + " ".join(v.decode(errors="replace") for v in meta.values())
            problems += _table_problems(table, rel, min_cell)
        elif kind == "png":
            try:
                info = Image.open(f).info
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{rel}: unreadable PNG ({type(exc).__name__})")
                continue
            if info.get("Description") != BANNER:
                problems.append(f"{rel}: figure lacks the non-diagnostic label")
            if (info.get("Source") or f.stem in AUDIO_PICTURES) and not (
                    info.get("Source") == SYNTHETIC_SOURCE and demo_run):
                problems.append(f"{rel}: a picture of audio in a run that is not on the synthetic demo corpus "
                                "(a spectrogram of a real recording may not be written)")
            searchable = " ".join(str(v) for v in info.values() if isinstance(v, (str, bytes)))
        else:
            text = data.decode("utf-8", errors="replace")
            searchable = text
            try:
                obj = json.loads(text) if text.lstrip()[:1] in ("{", "[") else None
            except json.JSONDecodeError:
                obj = None
            if obj is not None:  # JSON carries the label as a top-level field (keys are sorted)
                if not (isinstance(obj, dict) and obj.get(BANNER_KEY) == BANNER):
                    problems.append(f"{rel}: the non-diagnostic label is missing")
                problems += _json_problems(obj, rel, min_cell)
            else:
                if f.suffix.lower() == ".json":
                    problems.append(f"{rel}: not valid JSON")
                if BANNER not in _visible_top(text, f.suffix.lower()):
                    problems.append(f"{rel}: the non-diagnostic label is not visible at the top")
                table = _csv_table(text)
                found = _table_problems(table, rel, min_cell) if table is not None else []
                problems += found
                phrase = DIAGNOSTIC_PHRASES.search(text)
                if phrase and not any("read like a diagnosis" in p for p in found):
                    problems.append(f"{rel}: text names a feature after a disease ({phrase.group(0)!r})")
        hit = next((i for i in ids if i in searchable), None)
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
        gone = df["verdict"].astype(str).isin(NO_NUMBER_VERDICTS)
        live = df[~gone]
        numeric = [c for c in df.columns if c not in NO_NUMBER_TEXT]
        shown = df.loc[gone, numeric].apply(lambda c: pd.to_numeric(c, errors="coerce")).notna()
        if shown.any(axis=None):
            out.append(f"{rel}: {int(shown.any(axis=1).sum())} suppressed or not-estimable row(s) still show numbers "
                       f"(e.g. {shown.columns[shown.any(axis=0)][0]})")
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
    person = next((c for c in df.columns if str(c).lower() in PERSON_COLUMNS), None)
    if person is not None and "recording_id" not in df.columns and len(df) >= 2 and df[person].is_unique:
        out.append(f"{rel}: one row per person ({person}); only group-level statistics may be written")
    return out
