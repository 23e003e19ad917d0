"""Any corpus from a CSV manifest: ``path, participant_id, segment_type[, label columns...]``.

Why: a corpus with no adapter of its own should run without code. The manifest names each recording's
file, its speaker and what was recorded; every other column is carried through as a label or confound
(``age`` and ``sex`` are normalised like every adapter's, ``wave`` is the collection period if given).

Data dictionary (the manifest's ``csv_labels_legend``):

========================  =========================================================================
column                    meaning
========================  =========================================================================
``path``                  audio file, relative to the manifest's folder (or absolute); any format
                          libsndfile reads (WAV, FLAC, OGG) — a missing file is status ``missing``
``participant_id``        the speaker; recordings of one person share it (the unit of analysis)
``segment_type``          a recording type the taxonomy knows (``counting-normal``, ``vowel-a``,
                          ``cough``, ``breath``...), a segment group (``prompted_speech``, ``vowel``,
                          ``cough``, ``breath``) or a task (``counting``, ``recitation``, ``reading``,
                          ``sustained_vowel``); anything else is group ``other`` (reported, not analysed)
``recording_id``          optional; default ``<participant_id>_<file stem>``
``age``                   optional, years; values outside 0-120 become unknown (counted in the notes)
``sex``                   optional; female/male/f/m/woman/man (any case), anything else unknown
``wave``                  optional collection period (a confound and split variable)
any other column          carried through unchanged as a label or confound for ``[[analysis.labels]]``,
                          except location, contact and free-text columns (postcode, address, e-mail,
                          GPS, comments...: ``dataset_adapters.privacy``), which are never read
========================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import archive
from dataset_adapters.base import RECORDING_COLUMNS, normalise_demographics
from dataset_adapters.inventory import finish_table, inspect_listed
from dataset_adapters.privacy import drop_sensitive
from dataset_adapters.segments import SEGMENT_TYPES, segment_fields
from dataset_adapters.tagger import TaggerConfig

REQUIRED = ("path", "participant_id", "segment_type")
MANIFEST_NAMES = ("manifest.csv", "metadata.csv")
#: A segment group or task name given as ``segment_type`` -> the recording type that stands for it.
_ALIASES = {"prompted_speech": "reading", "vowel": "vowel-a", "sustained_vowel": "vowel-a", "counting": "counting-normal",
            "breathing": "breath", "three_cough": "three-cough"}


def normalise_segment_type(value: str) -> str:
    """The taxonomy's recording type for a manifest ``segment_type`` (unknown values kept as given)."""
    v = str(value).strip()
    low = v.lower()
    if low in SEGMENT_TYPES:
        return low
    return _ALIASES.get(low, v)


class ManifestAdapter:
    """A corpus described by a CSV manifest (see the module docstring for its columns).

    Parameters
    ----------
    data_root:
        The manifest CSV itself, or a folder holding ``manifest.csv`` (or ``metadata.csv``).
    metadata_root:
        Unused (the manifest is the metadata); accepted so every adapter takes the same options.
    """

    name = "manifest"

    def __init__(self, data_root: str | Path, metadata_root: str | Path | None = None, only_with_audio: bool = False,
                 audio_check: AudioCheckConfig = AudioCheckConfig(), tagger: TaggerConfig = TaggerConfig()):
        root = Path(data_root)
        if root.is_dir():
            found = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
            if not found:
                raise ClinicalTransferError(f"{root} holds no manifest ({' or '.join(MANIFEST_NAMES)})",
                                            "write a CSV with columns path, participant_id, segment_type[, labels...]")
            root = found[0]
        if not root.is_file():
            raise ClinicalTransferError(f"manifest {root} does not exist",
                                        "pass --data-root pointing at the manifest CSV or its folder")
        self.manifest_path = root
        self.data_root = root.parent
        self.only_with_audio = only_with_audio
        self.audio_check = audio_check
        self.tagger = tagger
        self.notes: list[str] = []

    def _table(self) -> pd.DataFrame:
        try:
            table = pd.read_csv(self.manifest_path, dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise ClinicalTransferError(f"manifest {self.manifest_path} cannot be read as CSV ({exc})",
                                        "save it as UTF-8 CSV with a header row") from exc
        table.columns = [str(c).strip() for c in table.columns]
        table = drop_sensitive(table, self.notes, "the manifest")
        if "path" not in table.columns and "file_name" in table.columns:  # a Hugging Face audiofolder
            table = table.rename(columns={"file_name": "path"})
        missing = [c for c in REQUIRED if c not in table.columns]
        if missing:
            raise ClinicalTransferError(f"manifest {self.manifest_path.name} lacks column(s) {', '.join(missing)}",
                                        "the manifest needs path, participant_id and segment_type (labels optional)")
        reserved = sorted(set(table.columns) & (set(RECORDING_COLUMNS) - {"recording_id", "participant_id", "age",
                                                                           "sex", "wave", "quality"}))
        if reserved:
            raise ClinicalTransferError(f"manifest column(s) {', '.join(reserved)} clash with the Recording table",
                                        "rename them (the inventory computes these itself)")
        blank = table[list(REQUIRED)].isna().any(axis=1)
        if blank.any():
            raise ClinicalTransferError(f"manifest rows {', '.join(str(i + 2) for i in blank[blank].index[:5])} "
                                        "have an empty path, participant_id or segment_type",
                                        "fill them in or delete those rows")
        if "recording_id" not in table.columns:
            table["recording_id"] = table["participant_id"] + "_" + table["path"].map(lambda p: Path(p).stem)
        dup = table["recording_id"].duplicated(keep=False)
        if dup.any():
            raise ClinicalTransferError(f"manifest recording ids are not unique ({table.loc[dup, 'recording_id'].iloc[0]!r})",
                                        "give a recording_id column with one value per row")
        return table

    def metadata(self) -> pd.DataFrame:
        """One row per participant: the first row's value of every extra column (labels, confounds)."""
        table = self._table()
        extra = [c for c in table.columns if c not in ("path", "segment_type", "recording_id")]
        return normalise_demographics(table[extra].drop_duplicates("participant_id"), []).reset_index(drop=True)

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        table = normalise_demographics(self._table(), self.notes)
        rows = []
        for _, r in tqdm(table.iterrows(), total=len(table), desc="manifest inventory", unit="rec",
                         disable=None if progress else True):
            path = Path(r["path"])
            path = path if path.is_absolute() else self.data_root / path
            rtype = normalise_segment_type(r["segment_type"])
            info = inspect_listed(path, rtype, self.audio_check, tag, check_audio)
            rows.append({"recording_id": r["recording_id"], "participant_id": r["participant_id"],
                         "dataset": self.name, "source": str(path), **segment_fields(rtype), **info})
        out = pd.DataFrame.from_records(rows)
        extra = [c for c in table.columns if c not in ("path", "segment_type", "recording_id", "participant_id")]
        out = out.merge(table[["recording_id", *extra]], on="recording_id", how="left", validate="one_to_one")
        if self.only_with_audio:
            with_audio = set(out.loc[out["status"] != "missing", "participant_id"])
            left = out["participant_id"].nunique() - len(with_audio)
            out = out[out["participant_id"].isin(with_audio)]
            self.notes.append(f"only_with_audio: {left} participant(s) without any audio left out")
        return finish_table(out, ["participant_id", "recording_id"])

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        return archive.read_sources(sources)
