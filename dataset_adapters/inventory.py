"""Turn found-or-missing audio into inventory rows: status, reason, measures, hash and content tag.

Why shared: every adapter must account for every expected recording the same way — ``ok``, ``missing``,
``unreadable``, ``silent`` or ``too_short`` with a reason — so that nothing is silently dropped and the
reports can count exclusions by reason whatever the corpus.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from clinical_transfer.audio import AudioCheckConfig, check, decode, to_mono
from clinical_transfer.hashing import sha256_bytes
from dataset_adapters.segments import segment_of
from dataset_adapters.tagger import TaggerConfig, features, tag_from_features

_MEASURES = ("sample_rate_hz", "n_channels", "duration_s", "peak_dbfs", "rms_dbfs", "silence_fraction",
             "clipped_fraction")


UNVALIDATED = "not validated (check_audio=False)"


def unvalidated(recording_type: str) -> dict:
    """Inventory fields of a recording whose file exists but was not read (``check_audio=False``)."""
    return {**inspect(None, recording_type), "status": "ok", "status_reason": UNVALIDATED}


def inspect(
    data: bytes | None,
    recording_type: str,
    audio_cfg: AudioCheckConfig = AudioCheckConfig(),
    tag: bool = True,
    tagger_cfg: TaggerConfig = TaggerConfig(),
) -> dict:
    """Inventory fields of one expected recording (``data`` is None when the file is absent)."""
    group = segment_of(recording_type).segment_group
    row: dict = {k: np.nan for k in _MEASURES}
    row.update(status="missing", status_reason="file not found", audio_sha256=None, tag=None, tag_agreement=pd.NA)
    if data is None:
        return row
    row["audio_sha256"] = sha256_bytes(data)
    result = check(data, audio_cfg)
    row.update(status=result.status, status_reason=result.reason)
    if result.measures is not None:
        row.update({k: v for k, v in asdict(result.measures).items() if k in _MEASURES})
    if tag and result.status == "ok":
        x, sr = decode(data)
        row["tag"] = tag_from_features(features(to_mono(x), sr, tagger_cfg), tagger_cfg)
        row["tag_agreement"] = row["tag"] == group
    return row


def finish_table(table: pd.DataFrame, sort_by: list[str] | str = "recording_id") -> pd.DataFrame:
    """The Recording table's common tail: every adapter's columns typed alike (nullable integers, a
    nullable boolean agreement), :data:`~dataset_adapters.base.RECORDING_COLUMNS` first, rows sorted."""
    from dataset_adapters.base import RECORDING_COLUMNS

    table = table.copy()
    for col in ("wave", "quality"):
        if col not in table.columns:
            table[col] = pd.NA
    for col in ("sample_rate_hz", "n_channels", "quality"):
        table[col] = pd.to_numeric(table[col], errors="coerce").round().astype("Int64")
    table["tag_agreement"] = table["tag_agreement"].astype("boolean")
    other = [c for c in table.columns if c not in RECORDING_COLUMNS]
    table = table[list(RECORDING_COLUMNS) + other]
    return table.sort_values(sort_by, kind="stable").reset_index(drop=True)


def status_counts(recordings: pd.DataFrame) -> pd.DataFrame:
    """Counts of recordings by (segment group, status, reason): the inclusion/exclusion table."""
    return (
        recordings.fillna({"status_reason": ""})
        .groupby(["segment_group", "status", "status_reason"], dropna=False)
        .size()
        .rename("n_recordings")
        .reset_index()
    )


def tag_agreement_summary(recordings: pd.DataFrame) -> pd.DataFrame:
    """Share of ``ok`` recordings whose content tag agrees with the declared segment group."""
    ok = recordings[recordings["status"] == "ok"].dropna(subset=["tag"])
    if ok.empty:
        return pd.DataFrame(columns=["segment_group", "n", "agreement"])
    g = ok.groupby("segment_group")["tag_agreement"]
    return pd.DataFrame({"n": g.size(), "agreement": g.apply(lambda s: float(s.astype(bool).mean()))}).reset_index()
