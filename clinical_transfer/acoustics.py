"""Interpretable acoustics: eGeMAPS v02 functionals (88 named descriptors per recording) via openSMILE.

Why: a reader of an SAE overlay needs to know what plain acoustics already shows — F0, jitter, shimmer,
HNR, formants, loudness, spectral slopes — for each label and segment group, and which SAE correlates
survive once those are accounted for. eGeMAPS (Eyben et al. 2016) is the field's minimal standard set;
openSMILE's Python wheel computes it with no download. Descriptors are cached per recording by content
address (audio SHA-256 x feature set x openSMILE version), so a second run decodes nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinical_transfer import guardrails
from clinical_transfer.audio import SourceBytes, batched_waveforms, read_files
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.files import atomic_file
from clinical_transfer.hashing import sha256_text

SAMPLE_RATE = 16_000
PREFIX = "egemaps_"
#: eGeMAPS parameter groups (after Eyben et al. 2016, with the source measures jitter, shimmer, HNR,
#: H1-H2 and H1-A3 read together as voice quality), matched by name fragment in this order.
DESCRIPTOR_GROUPS = (
    ("voice quality", ("jitter", "shimmer", "HNR", "H1-H2", "H1-A3")),
    ("pitch", ("F0semitone",)),
    ("formants", ("F1frequency", "F2frequency", "F3frequency", "F1bandwidth", "F2bandwidth", "F3bandwidth",
                  "F1amplitude", "F2amplitude", "F3amplitude")),
    ("spectral balance", ("alphaRatio", "hammarberg", "slope", "spectralFlux")),
    ("cepstral", ("mfcc",)),
    ("temporal", ("Segment", "PerSec", "Rate")),  # before loudness: the rate of loudness peaks is temporal
    ("loudness", ("loudness", "equivalentSoundLevel")),
)


def descriptor_group(name: str) -> str:
    """The eGeMAPS parameter group of a descriptor name (``other`` when none matches)."""
    name = name.removeprefix(PREFIX)
    for group, fragments in DESCRIPTOR_GROUPS:
        if any(f in name for f in fragments):
            return group
    return "other"


def _smile():
    try:
        import opensmile  # start-up time: loads the openSMILE shared library
    except ImportError as exc:  # pragma: no cover - installed by the project's own files
        raise ClinicalTransferError("the eGeMAPS baseline needs the opensmile package",
                                    "install the project with make (opensmile is a dependency)") from exc
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals), opensmile.__version__


def descriptor_id() -> str:
    """Identity of the descriptor set (what a cache key and a manifest record)."""
    _, version = _smile()
    return f"eGeMAPSv02 functionals, opensmile {version}"


def egemaps_table(recordings: pd.DataFrame, salt: str, cache_dir: str | Path, progress: bool = True,
                  reader: Callable[[Iterable[str]], Iterator[SourceBytes]] = read_files) -> pd.DataFrame:
    """``recording_id`` (pseudonymised like the score store) + 88 ``egemaps_*`` columns, for the ok rows.

    A recording too short or silent for a descriptor gives NaN there (openSMILE's own convention is 0
    for undefined F0 statistics; those are kept as openSMILE reports them).
    """
    smile, version = _smile()
    names = list(smile.feature_names)
    del smile
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    ok = recordings[recordings["status"] == "ok"].reset_index(drop=True)
    keys = [sha256_text(f"{a}:eGeMAPSv02:{version}") for a in ok["audio_sha256"].astype(str)]
    values = np.full((len(ok), len(names)), np.nan)
    todo = {}
    for row, key in enumerate(keys):
        path = cache / f"{key}.npy"
        try:
            values[row] = np.load(path)
        except FileNotFoundError:
            todo[ok["source"].iloc[row]] = row
        except Exception:  # noqa: BLE001 - a corrupt entry (0 bytes, truncated, wrong shape) is recomputed
            path.unlink(missing_ok=True)
            todo[ok["source"].iloc[row]] = row
    bar = tqdm(total=len(ok), initial=len(ok) - len(todo), desc="eGeMAPS", unit="rec",
               disable=None if progress else True)
    local = threading.local()  # one openSMILE instance per thread (the library call releases the GIL)

    def describe(item: tuple[str, np.ndarray]) -> None:
        if not hasattr(local, "smile"):
            local.smile = _smile()[0]
        src, y = item
        row = todo[src]
        v = local.smile.process_signal(np.asarray(y, np.float32), SAMPLE_RATE).to_numpy(float).ravel()
        with atomic_file(cache / f"{keys[row]}.npy") as fh:  # a killed run leaves no half-written file
            np.save(fh, v)
        values[row] = v

    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4)) as pool:  # measured 2.2x on 2 cores
        for items in batched_waveforms(reader(list(todo)), SAMPLE_RATE, 32):
            list(pool.map(describe, items))
            bar.update(len(items))
    bar.close()
    table = pd.DataFrame(values, columns=[PREFIX + n for n in names])
    table.insert(0, "recording_id", guardrails.pseudonymise(ok["recording_id"], salt, "r").to_numpy())
    return table


def acoustic_components(table: pd.DataFrame, groups: pd.Series, k: int) -> pd.DataFrame:
    """Top-``k`` principal components of the standardised descriptors, fit per segment group.

    Returned as ``acoustic_pc1..k`` aligned with ``table``'s rows, to be added as confounds: a feature
    whose association survives them carries something plain acoustics does not.
    """
    X = table.drop(columns="recording_id").to_numpy(float)
    out = np.full((len(table), k), np.nan)
    for g in pd.unique(groups):
        rows = (groups == g).to_numpy()
        Z = X[rows]
        Z = np.where(np.isfinite(Z), Z, np.nanmean(Z, axis=0))
        sd = Z.std(axis=0)
        Z = (Z - Z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        if len(Z) <= k:
            continue
        U, S, _ = np.linalg.svd(Z, full_matrices=False)
        pcs = U[:, :k] * S[:k]
        pcs *= np.sign(pcs[np.argmax(np.abs(pcs), axis=0), np.arange(k)])  # a fixed sign per component
        out[rows] = pcs
    return pd.DataFrame(out, columns=[f"acoustic_pc{i + 1}" for i in range(k)], index=table.index)
