"""The Recording table every adapter returns, the adapter protocol, and the adapter registry.

Why one table: everything downstream (audio, encoders, statistics) reads the same columns whatever the
corpus, so adding a corpus means writing one adapter and nothing else.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import pandas as pd

from clinical_transfer.errors import ClinicalTransferError

#: Columns of the Recording table, in order. Adapters append their own normalised label columns.
RECORDING_COLUMNS = (
    "recording_id",  # corpus recording id (raw; pseudonymised by guardrails on output)
    "participant_id",  # corpus participant id (raw; pseudonymised on output)
    "dataset",
    "source",  # a path, or "<archive parts>::<member>"
    "recording_type",  # the corpus's own name, e.g. counting-normal
    "segment_group",  # prompted_speech | vowel | cough | breath | other
    "task",  # counting | recitation | reading | sustained_vowel | cough | breath | other
    "prompted_task",  # bool
    "status",  # ok | missing | unreadable | silent | too_short
    "status_reason",
    "sample_rate_hz",
    "n_channels",
    "duration_s",
    "peak_dbfs",
    "rms_dbfs",
    "silence_fraction",
    "clipped_fraction",
    "audio_sha256",
    "quality",  # corpus annotation (Coswara: 0 bad, 1 good, 2 excellent)
    "tag",  # segment group the acoustic tagger sees
    "tag_agreement",  # tag == segment_group (NA when audio is not ok)
    "wave",  # collection wave (Coswara: date folder YYYYMMDD)
    "age",
    "sex",
    "country",
    "english_proficiency",
    "returning_user",
)


class Adapter(Protocol):
    """What a corpus adapter provides."""

    name: str

    def metadata(self) -> pd.DataFrame:
        """One normalised row per participant (labels and confounds)."""

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        """One row per expected recording, with the columns of :data:`RECORDING_COLUMNS` first."""


_REGISTRY: dict[str, str] = {
    "coswara": "dataset_adapters.coswara:CoswaraAdapter",
}


def register_adapter(name: str, target: str) -> None:
    """Register an adapter class by import path (``module:Class``), so imports stay lazy."""
    _REGISTRY[name] = target


def available_adapters() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(name: str, data_root: str | Path, **options) -> Adapter:
    """Instantiate the adapter registered under ``name`` for a corpus at ``data_root``."""
    if name not in _REGISTRY:
        raise ClinicalTransferError(
            f"unknown dataset {name!r}",
            f"use one of: {', '.join(available_adapters())}",
        )
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(data_root, **options)
