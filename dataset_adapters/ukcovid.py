"""The UK COVID-19 Vocal Audio Dataset, Open Access Edition (UKHSA, 2023; OGL v3.0).

Facts this adapter relies on (``shared/design/CORPORA.md``; the Turing-RSS data-paper code):

* a folder with ``participant_metadata.csv``, ``audio_metadata.csv``, ``train_test_splits.csv`` and
  ``audio/`` (WAV files named by the ``*_file_name`` columns of ``audio_metadata.csv``);
* the id column is ``participant_identifier`` in all three files, one row per participant;
* the open edition holds three modalities: ``exhalation``, ``cough`` and ``three_cough``;
* ``train_test_splits.csv`` carries the published splits: ``splits`` (train / val / test / long: the
  standard and longitudinal sets), ``naive_splits`` (randomised), ``matched_train_splits`` and the
  ``in_matched_rebalanced_*`` flags (matched sets). Every column of the file is carried as metadata, so the
  matched split can be used as a stratum or to subset.

Data dictionary (what the Recording table carries):

=========================  ========================================================================
column                     meaning
=========================  ========================================================================
``recording_type``         ``exhalation`` (group breath), ``cough`` and ``three-cough`` (group cough)
``covid_positive``         True for ``covid_test_result`` Positive, False for Negative, else unknown
``covid_test_result``,     as published (PCR / LFT result and method)
``covid_test_method``
``symptom_*``,             0/1 as published -> True/False
``respiratory_condition_*``
``age``, ``sex``           numeric ages within 0-120 (others, e.g. "Prefer not to say", unknown);
                           gender Male/Female -> male/female
``wave``                   month of ``submission_date`` (``YYYY-MM``); other dates are not kept
``recruitment_source``,    as published (confounds: Test and Trace vs REACT, survey phase)
``survey_phase``, ...
split columns              every column of ``train_test_splits.csv``, as published
=========================  ========================================================================

Location, contact and free-text columns are never read (``dataset_adapters.privacy``); neither are the
exact dates (quasi-identifiers), only the submission month.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import archive
from dataset_adapters.base import normalise_demographics
from dataset_adapters.inventory import finish_table, inspect, inspect_listed
from dataset_adapters.privacy import drop_sensitive
from dataset_adapters.segments import segment_fields
from dataset_adapters.tagger import TaggerConfig

ID = "participant_identifier"
FILES = ("participant_metadata.csv", "audio_metadata.csv", "train_test_splits.csv")
MODALITIES = {"exhalation": "exhalation", "cough": "cough", "three_cough": "three-cough"}
"""audio_metadata column prefix -> recording type."""


def _read(path: Path, notes: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ClinicalTransferError(f"{path.name} cannot be read as CSV ({exc})",
                                    "use the file as published") from exc
    table.columns = table.columns.map(str).str.strip()
    if ID not in table.columns:
        raise ClinicalTransferError(f"{path.name} has no {ID} column", "use the file as published")
    return drop_sensitive(table, notes, path.name)


class UKCovidAdapter:
    """The UK COVID-19 Vocal Audio Dataset (open edition) as a Recording table.

    Parameters
    ----------
    data_root:
        The folder with the three CSVs and ``audio/``.
    """

    name = "ukcovid"

    def __init__(self, data_root: str | Path, metadata_root: str | Path | None = None, only_with_audio: bool = False,
                 audio_check: AudioCheckConfig = AudioCheckConfig(), tagger: TaggerConfig = TaggerConfig()):
        self.data_root = Path(data_root)
        self.metadata_root = Path(metadata_root) if metadata_root is not None else self.data_root
        missing = [f for f in FILES if not (self.metadata_root / f).is_file()]
        if not self.data_root.is_dir() or missing:
            raise ClinicalTransferError(
                f"{self.metadata_root} is not a UK COVID-19 Vocal Audio layout: {', '.join(missing) or 'no folder'} "
                "missing", "point --data-root at the folder with participant_metadata.csv, audio_metadata.csv, "
                           "train_test_splits.csv and audio/")
        self.only_with_audio = only_with_audio
        self.audio_check = audio_check
        self.tagger = tagger
        self.notes: list[str] = []

    def metadata(self) -> pd.DataFrame:
        """One normalised row per participant: labels, confounds and the published splits."""
        people = _read(self.metadata_root / "participant_metadata.csv", self.notes)
        splits = _read(self.metadata_root / "train_test_splits.csv", self.notes)
        out = people.copy()
        if "submission_date" in out.columns:
            out["wave"] = pd.to_datetime(out["submission_date"], errors="coerce").dt.strftime("%Y-%m").astype("string")
        out = out.drop(columns=[c for c in out.columns if "date" in c.lower() or c == "symptom_onset"])
        result = out.get("covid_test_result", pd.Series(pd.NA, index=out.index)).astype("string").str.strip()
        out["covid_positive"] = result.map({"Positive": True, "Negative": False}).astype("boolean")
        for col in [c for c in out.columns if c.startswith(("symptom_", "respiratory_condition_"))]:
            out[col] = out[col].astype("string").str.strip().map({"1": True, "0": False, "True": True,
                                                                  "False": False}).astype("boolean")
        if "gender" in out.columns:
            out["sex"] = out["gender"]
        out = out.rename(columns={ID: "participant_id"})
        splits = splits.rename(columns={ID: "participant_id"})
        extra = [c for c in splits.columns if c not in out.columns or c == "participant_id"]
        out = out.merge(splits[extra], on="participant_id", how="left", validate="one_to_one")
        return normalise_demographics(out, self.notes).reset_index(drop=True)

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        meta = self.metadata()
        audio = _read(self.metadata_root / "audio_metadata.csv", self.notes).rename(columns={ID: "participant_id"})
        known = set(meta["participant_id"])
        unknown = int((~audio["participant_id"].isin(known)).sum())
        if unknown:
            self.notes.append(f"{unknown} audio_metadata row(s) of participants not in participant_metadata.csv "
                              "(ignored)")
        audio = audio[audio["participant_id"].isin(known)]
        rows = []
        for _, a in tqdm(audio.iterrows(), total=len(audio), desc="ukcovid inventory", unit="participant",
                         disable=None if progress else True):
            for prefix, rtype in MODALITIES.items():
                name = a.get(f"{prefix}_file_name")
                base = {"recording_id": f"{a['participant_id']}_{rtype}", "participant_id": a["participant_id"],
                        "dataset": self.name, **segment_fields(rtype)}
                if pd.isna(name):
                    rows.append({**base, "source": None, **inspect(None, rtype),
                                 "status_reason": f"no {prefix} recording listed in audio_metadata.csv"})
                    continue
                path = self.data_root / "audio" / Path(str(name)).name
                info = inspect_listed(path, rtype, self.audio_check, tag, check_audio)
                rows.append({**base, "source": str(path), **info})
        table = pd.DataFrame.from_records(rows)
        table = table.merge(meta, on="participant_id", how="left", validate="many_to_one")
        if self.only_with_audio:
            with_audio = set(table.loc[table["status"] != "missing", "participant_id"])
            table = table[table["participant_id"].isin(with_audio)]
        return finish_table(table)

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        return archive.read_sources(sources)
