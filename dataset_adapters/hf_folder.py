"""A local Hugging Face ``datasets`` folder: ``save_to_disk`` output or an audiofolder with metadata.csv.

Why: many clinical-audio corpora circulate as HF datasets. Two local forms run without code:

* a ``Dataset`` / ``DatasetDict`` saved with ``save_to_disk`` (``state.json`` / ``dataset_dict.json``):
  one row per recording with an ``Audio`` column (or a ``{bytes, path}`` struct), ``participant_id``
  (or ``speaker_id``) and ``segment_type`` columns; every other column is a label or confound; a
  ``DatasetDict``'s split name is kept as ``hf_split``. Audio bytes are read straight from the Arrow
  files (memory-mapped), never decoded by ``datasets`` (that would need torchcodec), so the inventory
  and encoders see the original file bytes;
* an audiofolder: audio files plus ``metadata.csv`` whose ``file_name`` column names them — read as a
  manifest (:mod:`dataset_adapters.manifest`), which needs ``participant_id`` and ``segment_type`` too.

Location, contact and free-text columns are never read (``dataset_adapters.privacy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters.base import normalise_demographics
from dataset_adapters.inventory import finish_table, inspect, unvalidated
from dataset_adapters.manifest import ManifestAdapter, normalise_segment_type
from dataset_adapters.privacy import drop_sensitive
from dataset_adapters.segments import segment_fields
from dataset_adapters.tagger import TaggerConfig

ROW = "#row="


def _load(root: Path):
    import datasets  # start-up time: only this adapter needs it

    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        parts = [d.add_column("hf_split", [name] * len(d)) for name, d in loaded.items()]
        return datasets.concatenate_datasets(parts)
    return loaded


def _audio_column(ds) -> str:
    for name, feature in ds.features.items():
        kind = type(feature).__name__
        if kind == "Audio" or (isinstance(feature, dict) and set(feature) >= {"bytes", "path"}):
            return name
    raise ClinicalTransferError("the dataset has no audio column (an Audio feature or a {bytes, path} struct)",
                                "save the corpus with an Audio column, e.g. cast_column('audio', Audio())")


class HfFolderAdapter:
    """A local HF datasets folder as a Recording table (see the module docstring)."""

    name = "hf-folder"

    def __init__(self, data_root: str | Path, metadata_root: str | Path | None = None, only_with_audio: bool = False,
                 audio_check: AudioCheckConfig = AudioCheckConfig(), tagger: TaggerConfig = TaggerConfig()):
        self.data_root = Path(data_root)
        self.audio_check = audio_check
        self.notes: list[str] = []
        self._manifest = None
        if (self.data_root / "metadata.csv").is_file():  # an audiofolder
            self._manifest = ManifestAdapter(self.data_root / "metadata.csv", only_with_audio=only_with_audio,
                                             audio_check=audio_check, tagger=tagger)
            self.notes = self._manifest.notes
        elif not any((self.data_root / f).is_file() for f in ("state.json", "dataset_dict.json")):
            raise ClinicalTransferError(f"{self.data_root} is not a Hugging Face datasets folder",
                                        "pass a save_to_disk folder (state.json / dataset_dict.json) or an "
                                        "audiofolder with metadata.csv")
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            self._ds = _load(self.data_root)
        return self._ds

    def _table(self) -> tuple[pd.DataFrame, str]:
        audio = _audio_column(self.ds)
        table = self.ds.remove_columns([audio]).to_pandas()
        table = table.rename(columns={"speaker_id": "participant_id"}) if "participant_id" not in table.columns else table
        missing = [c for c in ("participant_id", "segment_type") if c not in table.columns]
        if missing:
            raise ClinicalTransferError(f"the dataset lacks column(s) {', '.join(missing)}",
                                        "add participant_id (or speaker_id) and segment_type columns")
        table = drop_sensitive(table.astype({"participant_id": str}), self.notes, "the dataset")
        return table, audio

    def metadata(self) -> pd.DataFrame:
        if self._manifest is not None:
            return self._manifest.metadata()
        table, _ = self._table()
        extra = [c for c in table.columns if c not in ("segment_type", "recording_id")]
        return normalise_demographics(table[extra].drop_duplicates("participant_id"), []).reset_index(drop=True)

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        if self._manifest is not None:
            return self._manifest.recordings(check_audio, tag, progress)
        table, audio = self._table()
        table = normalise_demographics(table, self.notes)
        if "recording_id" not in table.columns:
            table["recording_id"] = [f"{p}_{i:06d}" for i, p in enumerate(table["participant_id"])]
        column = self.ds.data.column(audio)
        rows = []
        for i, r in tqdm(table.iterrows(), total=len(table), desc="hf-folder inventory", unit="rec",
                         disable=None if progress else True):
            rtype = normalise_segment_type(r["segment_type"])
            cell = column[i].as_py() or {}
            data = cell.get("bytes") if check_audio else None
            info = inspect(data, rtype, self.audio_check, tag) if check_audio else unvalidated(rtype)
            if check_audio and data is None:
                info["status_reason"] = "no audio bytes in the row"
            rows.append({"recording_id": r["recording_id"], "participant_id": r["participant_id"], "dataset": self.name,
                         "source": f"{self.data_root}{ROW}{i}", **segment_fields(rtype), **info})
        out = pd.DataFrame.from_records(rows)
        extra = [c for c in table.columns if c not in ("segment_type", "recording_id", "participant_id")]
        out = out.merge(table[["recording_id", *extra]], on="recording_id", how="left", validate="one_to_one")
        return finish_table(out, ["participant_id", "recording_id"])

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        if self._manifest is not None:
            yield from self._manifest.read_sources(sources)
            return
        column = self.ds.data.column(_audio_column(self.ds))
        for src in sources:
            row = int(src.rsplit(ROW, 1)[1])
            yield src, (column[row].as_py() or {}).get("bytes")
