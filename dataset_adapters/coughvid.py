"""COUGHVID (EPFL; Orlandic et al. 2021; CC BY 4.0): crowd-sourced cough recordings, one per row.

Facts this adapter relies on (``shared/design/CORPORA.md``):

* layout: one folder ``public_dataset/`` holding ``<uuid>.webm`` or ``<uuid>.ogg`` (browser recordings,
  Opus) and ``metadata_compiled.csv`` (a ``<uuid>.json`` with the same fields may sit beside each file;
  it is not needed). Some audio file names do not match their uuid; as OPERA does, the uuid minus its last
  character is tried (counted in the notes).
* ``metadata_compiled.csv``: ``uuid, datetime, cough_detected, latitude, longitude, age, gender,
  respiratory_condition, fever_muscle_pain, status`` then three expert blocks (``quality_k``,
  ``cough_type_k``, ``dyspnea_k`` ... ``diagnosis_k``, ``severity_k``; expert 3 in another order).
* there is **no participant id**: one person may have several uuids, unlinkably. Each recording is its own
  analysis unit here (stated in the report through the corpus note), so participant-level statistics are
  recording-level for this corpus.

Data dictionary (what the Recording table carries):

=====================  ============================================================================
column                 meaning
=====================  ============================================================================
``participant_id``     the recording's uuid (no person id exists)
``status``             inventory status; ``excluded`` when ``cough_detected`` < the threshold (0.8 by
                       default, as the authors advise), with the value in the reason
``covid_self_report``  the corpus's ``status`` (healthy, symptomatic, COVID-19): self-reported, not
                       test-verified
``covid_positive``     True for COVID-19, False for healthy, unknown for symptomatic
``respiratory_condition``, ``fever_muscle_pain``   True/False self-reports (blank unknown)
``age``, ``sex``       years (0-120, others unknown and counted); male/female (``other`` kept as
                       ``gender_other``, sex unknown)
``wave``               collection month ``YYYY-MM`` from ``datetime`` (the timestamp itself is not kept)
``quality``            the first expert's rating mapped good 2, ok 1, poor 0, no_cough 0 (blank unknown)
``cough_type_k``, ``diagnosis_k``, ``severity_k``  expert k's labels, raw (k = 1, 2, 3)
=====================  ============================================================================

``latitude`` and ``longitude`` are never read (not even into memory): ``usecols`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.taxonomy import EXCLUDED
from dataset_adapters import archive
from dataset_adapters.base import normalise_demographics
from dataset_adapters.inventory import finish_table, inspect_listed
from dataset_adapters.segments import segment_fields
from dataset_adapters.tagger import TaggerConfig

METADATA = "metadata_compiled.csv"
NEVER_READ = ("latitude", "longitude")
AUDIO_SUFFIXES = (".webm", ".ogg", ".wav")
COUGH_DETECTED_MIN = 0.8
_QUALITY = {"good": 2, "ok": 1, "poor": 0, "no_cough": 0}
_BOOL = {"true": True, "false": False}
#: Columns of metadata_compiled.csv this adapter needs (the expert blocks are read when present).
REQUIRED = ("uuid", "datetime", "cough_detected", "age", "gender", "respiratory_condition", "fever_muscle_pain",
            "status")


class CoughvidAdapter:
    """COUGHVID as a Recording table (one cough recording per row; its uuid is the unit).

    Parameters
    ----------
    data_root:
        The ``public_dataset`` folder, or a folder that holds it.
    metadata_root:
        Folder with ``metadata_compiled.csv`` when it is not beside the audio.
    cough_detected_min:
        Recordings whose ``cough_detected`` probability is below this are ``excluded`` (reason recorded).
    """

    name = "coughvid"

    def __init__(self, data_root: str | Path, metadata_root: str | Path | None = None, only_with_audio: bool = False,
                 audio_check: AudioCheckConfig = AudioCheckConfig(), tagger: TaggerConfig = TaggerConfig(),
                 cough_detected_min: float = COUGH_DETECTED_MIN):
        root = Path(data_root)
        if (root / "public_dataset").is_dir():
            root = root / "public_dataset"
        if not root.is_dir():
            raise ClinicalTransferError(f"data root {root} does not exist",
                                        "pass the COUGHVID public_dataset folder (or the folder holding it)")
        self.data_root = root
        self.metadata_root = Path(metadata_root) if metadata_root is not None else root
        if not (self.metadata_root / METADATA).is_file():
            raise ClinicalTransferError(f"{self.metadata_root} is not a COUGHVID layout: {METADATA} is missing",
                                        "point --data-root at public_dataset/ or pass --metadata-root")
        self.only_with_audio = only_with_audio
        self.audio_check = audio_check
        self.tagger = tagger
        self.cough_detected_min = cough_detected_min
        self.notes: list[str] = []

    def metadata(self) -> pd.DataFrame:
        """One normalised row per recording uuid (no latitude/longitude; no timestamp, only its month)."""
        path = self.metadata_root / METADATA
        header = pd.read_csv(path, nrows=0).columns.map(str).str.strip()
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ClinicalTransferError(f"{METADATA} lacks column(s) {', '.join(missing)}",
                                        "use the metadata_compiled.csv published with the corpus")
        wanted = [c for c in header if c not in NEVER_READ and not c.startswith("Unnamed")]
        raw = pd.read_csv(path, usecols=lambda c: str(c).strip() in wanted, dtype=str, keep_default_na=False,
                          na_values=[""])
        raw.columns = raw.columns.map(str).str.strip()
        out = pd.DataFrame({"participant_id": raw["uuid"].str.strip()})
        when = pd.to_datetime(raw["datetime"], errors="coerce", utc=True)
        out["wave"] = when.dt.strftime("%Y-%m").astype("string")
        out["cough_detected"] = pd.to_numeric(raw["cough_detected"], errors="coerce")
        out["age"] = raw["age"]
        gender = raw["gender"].astype("string").str.strip().str.lower()
        out["sex"] = gender.where(gender.isin(["male", "female"]))
        out["gender_other"] = gender.eq("other").astype("boolean").where(gender.notna())
        for col in ("respiratory_condition", "fever_muscle_pain"):
            out[col] = raw[col].astype("string").str.strip().str.lower().map(_BOOL).astype("boolean")
        status = raw["status"].astype("string").str.strip()
        out["covid_self_report"] = status
        out["covid_positive"] = status.map({"COVID-19": True, "healthy": False}).astype("boolean")
        quality = pd.Series(pd.NA, index=raw.index, dtype="Int64")
        for k in (1, 2, 3):  # the first expert who rated the recording
            if f"quality_{k}" in raw.columns:
                q = raw[f"quality_{k}"].astype("string").str.strip().map(_QUALITY).astype("Int64")
                quality = quality.fillna(q)
            for field in ("cough_type", "diagnosis", "severity"):
                if f"{field}_{k}" in raw.columns:
                    out[f"{field}_{k}"] = raw[f"{field}_{k}"].astype("string")
        out["quality"] = quality
        dup = out["participant_id"].duplicated()
        if dup.any():
            self.notes.append(f"{int(dup.sum())} repeated uuid row(s) in {METADATA} ignored (first kept)")
            out = out[~dup]
        return normalise_demographics(out, self.notes).reset_index(drop=True)

    def _audio_files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for suffix in AUDIO_SUFFIXES:  # webm first, as published
            for path in sorted(self.data_root.glob(f"*{suffix}")):
                found.setdefault(path.stem, path)
        return found

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        meta = self.metadata()
        files = self._audio_files()
        rtype = "cough"
        rows, renamed = [], 0
        for _, m in tqdm(meta.iterrows(), total=len(meta), desc="coughvid inventory", unit="rec",
                         disable=None if progress else True):
            uuid = m["participant_id"]
            path = files.get(uuid)
            if path is None and uuid[:-1] in files:  # a published file name one character short
                path, renamed = files[uuid[:-1]], renamed + 1
            info = inspect_listed(path, rtype, self.audio_check, tag, check_audio)
            cd = m["cough_detected"]
            if info["status"] == "ok" and (pd.isna(cd) or cd < self.cough_detected_min):
                shown = "missing" if pd.isna(cd) else f"{cd:.4f}"
                info = {**info, "status": EXCLUDED,
                        "status_reason": f"cough_detected {shown} < {self.cough_detected_min:g} (the corpus's cough "
                                         "classifier)"}
            rows.append({"recording_id": uuid, "participant_id": uuid, "dataset": self.name,
                         "source": str(path) if path is not None else None, **segment_fields(rtype), **info})
        if renamed:
            self.notes.append(f"{renamed} audio file(s) found under the uuid minus its last character")
        stray = set(files) - set(meta["participant_id"]) - {u[:-1] for u in meta["participant_id"]}
        if stray:
            self.notes.append(f"{len(stray)} audio file(s) have no row in {METADATA} (ignored)")
        table = pd.DataFrame.from_records(rows)
        table = table.drop(columns=[c for c in ("quality",) if c in table.columns])
        table = table.merge(meta, on="participant_id", how="left", validate="one_to_one")
        if self.only_with_audio:
            n = int((table["status"] == "missing").sum())
            table = table[table["status"] != "missing"]
            self.notes.append(f"only_with_audio: {n} recording(s) without audio left out")
        return finish_table(table)

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        return archive.read_sources(sources)
