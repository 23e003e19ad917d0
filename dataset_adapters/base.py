"""The Recording table every adapter returns, the adapter protocol, and the adapter registry.

Why one table: everything downstream (audio, encoders, statistics) reads the same columns whatever the
corpus, so adding a corpus means writing one adapter and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
    "status",  # ok | missing | unreadable | silent | too_short | too_long
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
)


_SEX = {"female": "female", "f": "female", "woman": "female", "male": "male", "m": "male", "man": "male"}


def normalise_demographics(table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``age`` numeric within 0-120 (others unknown, counted), ``sex`` female/male (others unknown)."""
    out = table.copy()
    if "age" in out.columns:
        age = pd.to_numeric(out["age"], errors="coerce")
        bad = age.notna() & ~age.between(0, 120)
        if bad.any():
            notes.append(f"{int(bad.sum())} age value(s) outside 0-120 set to unknown")
        out["age"] = age.where(~bad).astype("Float64")
    else:
        out["age"] = pd.array([pd.NA] * len(out), dtype="Float64")
    if "sex" in out.columns:
        out["sex"] = out["sex"].astype("string").str.strip().str.lower().map(_SEX).astype("string")
    else:
        out["sex"] = pd.array([pd.NA] * len(out), dtype="string")
    return out


class Adapter(Protocol):
    """What a corpus adapter provides."""

    name: str

    def metadata(self) -> pd.DataFrame:
        """One normalised row per participant (labels and confounds)."""

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        """One row per expected recording, with the columns of :data:`RECORDING_COLUMNS` first."""

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """Bytes of each ``source`` locator of the Recording table (``None`` when it is gone)."""


@dataclass(frozen=True)
class AdapterEntry:
    """What the registry knows of a corpus before its adapter is imported."""

    target: str
    """Import path of the adapter class, ``module:Class`` (imported only when used)."""
    default_config: str = ""
    """File under ``configs/`` that ``--dataset NAME`` runs when no ``--config`` is given; it declares the
    corpus's confounds and split variables (``[analysis] confounds``, ``strata``)."""
    licence: str = ""
    citation: str = ""


_REGISTRY: dict[str, AdapterEntry] = {
    "coswara": AdapterEntry(
        "dataset_adapters.coswara:CoswaraAdapter", default_config="coswara.toml", licence="CC BY 4.0",
        citation="Bhattacharya et al. 2023, Coswara: a respiratory sounds and symptoms dataset (Sci Data 10:397)"),
    "coughvid": AdapterEntry(
        "dataset_adapters.coughvid:CoughvidAdapter", default_config="coughvid.toml", licence="CC BY 4.0",
        citation="Orlandic, Teijeiro, Atienza 2021, The COUGHVID crowdsourcing dataset, a corpus for the study of "
                 "large-scale cough analysis algorithms (Sci Data 8:156, doi:10.1038/s41597-021-00937-4)"),
    "icbhi": AdapterEntry(
        "dataset_adapters.icbhi:IcbhiAdapter", default_config="icbhi.toml",
        licence="publicly available for research (see bhichallenge.med.auth.gr; cite the database paper)",
        citation="Rocha et al. 2019, An open access database for the evaluation of respiratory sound "
                 "classification algorithms (Physiol Meas 40:035001)"),
    "ukcovid": AdapterEntry(
        "dataset_adapters.ukcovid:UKCovidAdapter", default_config="ukcovid.toml", licence="Open Government Licence v3.0",
        citation="The UK COVID-19 Vocal Audio Dataset Open Access Edition, UK Health Security Agency, 2023, licensed "
                 "under the Open Government Licence v3.0; Budd et al. 2024 (Sci Data, doi:10.1038/s41597-024-03492-w)"),
    "hf-folder": AdapterEntry(
        "dataset_adapters.hf_folder:HfFolderAdapter", default_config="hf-folder.toml",
        licence="the corpus's own (state it in your report)",
        citation="the corpus's own; a local Hugging Face datasets folder (save_to_disk, or an audiofolder)"),
    "manifest": AdapterEntry(
        "dataset_adapters.manifest:ManifestAdapter", default_config="manifest.toml",
        licence="the corpus's own (state it in your report)",
        citation="the corpus's own; any corpus as a CSV manifest (path, participant_id, segment_type, labels)"),
}


def register_adapter(name: str, entry: AdapterEntry) -> None:
    """Register a corpus: one line per adapter module, imports stay lazy."""
    _REGISTRY[name] = entry


def available_adapters() -> list[str]:
    return sorted(_REGISTRY)


def adapter_entry(name: str) -> AdapterEntry:
    """The registry entry of ``name`` (one-line error naming the known corpora otherwise)."""
    if name not in _REGISTRY:
        raise ClinicalTransferError(f"unknown dataset {name!r}", f"use one of: {', '.join(available_adapters())}")
    return _REGISTRY[name]


def adapter_class(name: str) -> type:
    """The class registered under ``name`` (imported on demand)."""
    module, cls = adapter_entry(name).target.split(":")
    return getattr(importlib.import_module(module), cls)


def get_adapter(name: str, data_root: str | Path, **options) -> Adapter:
    """Instantiate the adapter registered under ``name`` for a corpus at ``data_root``."""
    return adapter_class(name)(data_root, **options)
