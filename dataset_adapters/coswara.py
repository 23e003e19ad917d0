"""Coswara (IISc, CC BY 4.0): extracted folders *and* the published split ``.tar.gz.aa/.ab`` parts.

Facts this adapter relies on (see ``shared/design`` and the corpus SOURCE notes):

* metadata: ``combined_data.csv`` (36 columns; meanings in ``csv_labels_legend.json``);
* participant -> date folder: the per-date CSVs (``date_csvs/YYYYMMDD.csv`` in a snapshot, or
  ``YYYYMMDD/YYYYMMDD.csv`` in a clone) — *not* ``record_date``, which disagrees in most rows;
* quality: ``annotations/<type>_labels.csv``, header literally ``FILENAME, QUALITY``;
* audio: ``*/<id>/<type>.wav`` under any prefix (the oldest archive used ``data/``), or members of
  the split archives, which are streamed and never extracted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import archive
from dataset_adapters.base import RECORDING_COLUMNS
from dataset_adapters.inventory import Inspector, inspect, inspect_too_long, screen_too_long, too_long_row, unvalidated
from dataset_adapters.segments import COSWARA_TYPES, segment_fields
from dataset_adapters.tagger import TaggerConfig

PUBLISHED_AT = "https://github.com/iiscleap/Coswara-Data"

#: Legend columns answered True/False (symptoms, conditions) and y/n; blank means *unknown* in both.
TRUE_FALSE_COLUMNS = (
    "asthma", "cough", "smoker", "ht", "cold", "diabetes", "diarrhoea", "ihd", "bd", "st", "fever", "ftg", "mp",
    "loss_of_smell", "cld", "pneumonia", "others_resp", "others_preexist",
)
YES_NO_COLUMNS = ("ep", "rU", "um", "ctScan")
_BOOL_VALUES = {"true": True, "y": True, "yes": True, "false": False, "n": False, "no": False}
_MEMBER = re.compile(r"(?:^|/)(?P<pid>[^/]+)/(?P<rtype>[^/]+)\.wav$")
_DATE = re.compile(r"^(20\d{6})$")

#: The Recording table's column order for Coswara: the generic columns, then Coswara's own confounds.
COLUMNS = (*RECORDING_COLUMNS, "country", "english_proficiency", "returning_user")

#: The columns without which combined_data.csv cannot be used (participant id, age, sex).
REQUIRED_COLUMNS = ("id", "a", "g")
#: Plausible ages (years); others become unknown, counted in the notes.
AGE_RANGE = (0, 120)

#: Participants without any audio that are still listed recording by recording (9 "file not found" rows
#: each). Past this a run is refused with advice to pass ``--only-with-audio``: a metadata file of millions
#: of people beside a partial copy would otherwise be expanded to tens of millions of empty rows (a 12 MB
#: file of 100,000 such people already takes 1.4 GB).
MAX_LISTED_WITHOUT_AUDIO = 200_000
#: Rows of ``combined_data.csv`` read at a time.
CHUNK_ROWS = 100_000

#: Normalised confound columns and the raw column each comes from.
CONFOUNDS = {"age": "a", "sex": "g", "country": "l_c", "english_proficiency": "ep", "returning_user": "rU"}


def check_schema(columns: Iterable[str], n_rows: int | None = None) -> None:
    """One line naming what makes a ``combined_data.csv`` unusable: a required column missing, or no rows
    (``n_rows`` 0; None: not known yet, the header alone is checked)."""
    columns = list(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ClinicalTransferError(
            f"combined_data.csv has no {', '.join(repr(c) for c in missing)} column{'s' if len(missing) > 1 else ''} "
            f"(found: {', '.join(map(str, columns[:8]))}{'...' if len(columns) > 8 else ''})",
            "use the combined_data.csv published with Coswara (36 columns starting id,a,covid_status; "
            "id = participant, a = age, g = sex)",
        )
    if n_rows == 0:
        raise ClinicalTransferError("combined_data.csv lists no participants (a header only)",
                                    "use the combined_data.csv published with Coswara")


def normalise_metadata(raw: pd.DataFrame, allow_empty: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Normalise Coswara's ``combined_data.csv`` (read as strings); returns (table, notes).

    Booleans become pandas' nullable ``boolean`` with blank -> <NA> (unknown, not False). ``smoker``
    mixes True/False and y/n; both map. ``covid_status`` is kept raw and a binary ``covid_positive``
    contrast is derived: ``positive_*`` -> True, ``healthy`` -> False, anything else -> <NA> (excluded
    from that contrast, and counted in the notes). ``allow_empty``: ``raw`` is a selection of rows
    (participants with audio) that may be empty; the file itself was checked by :func:`check_schema`.
    """
    check_schema(raw.columns, None if allow_empty else len(raw))
    notes: list[str] = []
    reserved = set(COLUMNS) | set(CONFOUNDS) | {"wave", "covid_positive"}
    clash = [c for c in raw.columns if c in reserved and c not in CONFOUNDS.values()]
    if clash:  # never let a metadata column stand in for the adapter's own (e.g. a second id column)
        raw = raw.rename(columns={c: f"meta_{c}" for c in clash})
        notes.append(f"metadata column(s) {', '.join(clash)} clash with the Recording table's own names: kept "
                     f"as {', '.join('meta_' + c for c in clash)}")
    df = pd.DataFrame({"participant_id": raw["id"].astype(str).str.strip()})
    dup = int(df["participant_id"].duplicated().sum())
    if dup:
        raise ClinicalTransferError(f"combined_data.csv lists {dup} participant ids more than once",
                                    "remove the duplicate rows")
    for col in raw.columns:
        if col == "id":
            continue
        values = raw[col].astype(str).str.strip()
        if col in TRUE_FALSE_COLUMNS or col in YES_NO_COLUMNS:
            mapped = values.str.lower().map(_BOOL_VALUES)
            odd = values[(values != "") & mapped.isna()]
            if len(odd):
                notes.append(f"{col}: {len(odd)} value(s) {sorted(set(odd))} are not True/False/y/n -> unknown")
            df[col] = mapped.astype("boolean")
        elif col in ("a", "ctScore"):
            num = pd.to_numeric(values.replace("", None), errors="coerce")
            bad = int(((values != "") & num.isna()).sum())
            if bad:
                notes.append(f"{col}: {bad} non-numeric value(s) -> unknown")
            if col == "a":
                odd = num.notna() & ~num.between(AGE_RANGE[0], AGE_RANGE[1])
                if odd.any():
                    notes.append(f"a: {int(odd.sum())} age(s) outside {AGE_RANGE[0]}-{AGE_RANGE[1]} -> unknown")
                    num = num.where(~odd)
            df[col] = num.astype("Float64") if col == "ctScore" else num.round().astype("Int64")
        else:
            df[col] = values.replace("", None).astype("string")
    if "testType" in df:
        stray = int((df["testType"] == "False").sum())
        if stray:
            notes.append(f"testType: {stray} stray 'False' value(s) -> unknown")
            df.loc[df["testType"] == "False", "testType"] = pd.NA
    if "covid_status" in df:
        status = df["covid_status"]
        pos = status.str.startswith("positive_").fillna(False)
        neg = (status == "healthy").fillna(False)
        df["covid_positive"] = pd.array([True if p else False if n else pd.NA for p, n in zip(pos, neg)],
                                        dtype="boolean")
        excluded = int(df["covid_positive"].isna().sum())
        notes.append(f"covid_positive: {int(pos.sum())} positive_* vs {int(neg.sum())} healthy; "
                     f"{excluded} with other statuses excluded from that contrast")
    return df.rename(columns={col: name for name, col in CONFOUNDS.items()}), notes


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, **kwargs)
    except Exception as exc:
        raise ClinicalTransferError(f"cannot read {path}: {exc}", "check that it is an intact CSV file") from exc


def read_metadata_rows(path: Path, keep: set[str] | None = None) -> pd.DataFrame:
    """``combined_data.csv`` as strings, read in chunks of :data:`CHUNK_ROWS` rows; ``keep``: only the rows
    of these participant ids (None: all). Why chunks: with ``keep`` (``--only-with-audio``) a metadata file of
    millions of people never lies in memory whole, only the people whose audio is on disk."""
    try:
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, chunksize=CHUNK_ROWS)
        kept = [c if keep is None else c[c["id"].str.strip().isin(keep)] for c in chunks]
    except Exception as exc:
        raise ClinicalTransferError(f"cannot read {path}: {exc}", "check that it is an intact CSV file") from exc
    return pd.concat(kept, ignore_index=True) if kept else _read_csv(path)


def read_date_map(metadata_root: Path) -> dict[str, str]:
    """participant id -> date folder, from ``date_csvs/*.csv`` or ``YYYYMMDD/YYYYMMDD.csv``."""
    files = sorted(metadata_root.glob("date_csvs/*.csv")) or sorted(metadata_root.glob("2*/2*.csv"))
    mapping: dict[str, str] = {}
    for f in files:
        if not _DATE.match(f.stem):
            continue
        ids = _read_csv(f).get("id")
        if ids is None:
            raise ClinicalTransferError(f"{f} has no 'id' column", "use the per-date CSVs published with Coswara")
        for pid in ids.astype(str).str.strip():
            mapping.setdefault(pid, f.stem)
    return mapping


def read_quality(metadata_root: Path) -> dict[str, int]:
    """``<id>_<type>`` -> quality (0 bad, 1 good, 2 excellent) from the annotation CSVs."""
    quality: dict[str, int] = {}
    for f in sorted((metadata_root / "annotations").glob("*_labels.csv")):
        df = _read_csv(f)
        df.columns = [c.strip().upper() for c in df.columns]
        if not {"FILENAME", "QUALITY"} <= set(df.columns):
            raise ClinicalTransferError(f"{f} lacks the header 'FILENAME, QUALITY'",
                                        "use the annotation CSVs published with Coswara")
        q = pd.to_numeric(df["QUALITY"], errors="coerce")
        quality.update({k: int(v) for k, v in zip(df["FILENAME"].str.strip(), q) if pd.notna(v)})
    return quality


class CoswaraAdapter:
    """The Coswara corpus as a Recording table.

    Parameters
    ----------
    data_root:
        A clone of the Coswara repository (date folders with split archives), an extracted copy, or
        any folder holding ``*/<id>/<type>.wav``.
    metadata_root:
        Folder with ``combined_data.csv``, the per-date CSVs and ``annotations/`` (default: data_root).
    only_with_audio:
        Keep only participants with at least one audio file under data_root (for partial copies such as
        a single date folder); the number left out is recorded in :attr:`notes`.
    """

    name = "coswara"

    def __init__(
        self,
        data_root: str | Path,
        metadata_root: str | Path | None = None,
        only_with_audio: bool = False,
        audio_check: AudioCheckConfig = AudioCheckConfig(),
        tagger: TaggerConfig = TaggerConfig(),
        workers: int | None = None,
        inspect_cache: str | Path | None = None,
    ):
        self.workers = workers
        """Processes for the content check (None: every core, see :class:`~dataset_adapters.inventory.Inspector`)."""
        self.inspect_cache = inspect_cache
        """Folder caching each recording's check by its audio hash (None: no cache)."""
        self.data_root = Path(data_root)
        self.metadata_root = Path(metadata_root) if metadata_root is not None else self.data_root
        self.only_with_audio = only_with_audio
        self.audio_check = audio_check
        self.tagger = tagger
        self.notes: list[str] = []
        self.archive_faults: dict[str, str] = {}
        """Date folder -> why its archive stopped early (recordings not read get this reason)."""
        if not self.data_root.is_dir():
            raise ClinicalTransferError(
                f"data root {self.data_root} does not exist",
                f"pass the folder of a Coswara clone ({PUBLISHED_AT}) or extracted copy, or run with --demo",
            )
        if not (self.metadata_root / "combined_data.csv").is_file():
            raise ClinicalTransferError(
                f"{self.metadata_root} is not a Coswara layout: combined_data.csv is missing",
                "point --data-root at a Coswara clone (combined_data.csv, annotations/, date folders "
                "20200413...20220224), or pass --metadata-root DIR for the folder that holds combined_data.csv",
            )

    # -- metadata ---------------------------------------------------------------------------------
    def metadata(self) -> pd.DataFrame:
        """One normalised row per participant, with ``wave`` (date folder) from the per-date CSVs."""
        table, self.notes = self._metadata(self._participant_ids())
        return table

    def _participant_ids(self) -> set[str]:
        """The ``id`` column alone (the schema checked first): who is in the metadata, before any audio is
        read and without holding the other 35 columns of every person (1.5 million ids: ~0.3 GB)."""
        path = self.metadata_root / "combined_data.csv"
        header = _read_csv(path, nrows=0).columns
        check_schema(header)  # before usecols=["id"], which would fail on a file without it
        column = _read_csv(path, usecols=["id"])["id"]
        n_rows = len(column)
        check_schema(header, n_rows)
        ids = set(column.astype(str).str.strip())
        del column
        if len(ids) < n_rows:
            raise ClinicalTransferError(f"combined_data.csv lists {n_rows - len(ids)} participant ids more than once",
                                        "remove the duplicate rows")
        return ids

    def _metadata(self, ids: set[str], keep: set[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
        """Normalised metadata of the participants in ``keep`` (None: everyone) and its notes; ``ids`` are
        every participant of the file (for the per-date CSV check)."""
        raw = read_metadata_rows(self.metadata_root / "combined_data.csv", keep)
        table, notes = normalise_metadata(raw, allow_empty=keep is not None)
        dates = read_date_map(self.metadata_root)
        if not dates:
            notes.append("no per-date CSVs found: wave taken from the folder the audio lies in")
        table["wave"] = table["participant_id"].map(dates).astype("string")
        unknown = len(set(dates) - ids)
        if unknown:
            notes.append(f"{unknown} id(s) in per-date CSVs are not in combined_data.csv (ignored)")
        return table, notes

    # -- audio discovery --------------------------------------------------------------------------
    def _extracted(self) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        for path in sorted(self.data_root.rglob("*.wav")):
            m = _MEMBER.search(path.as_posix())
            if m and m["rtype"] in COSWARA_TYPES:
                found.setdefault((m["pid"], m["rtype"]), str(path))
        return found

    def _archives(self) -> list[list[Path]]:
        """Every split archive (parts contiguous from ``.aa``) or single ``.tar.gz``; strays, gaps and parts
        without an ``.aa`` go to :attr:`notes`."""
        stems: set[tuple[Path, str]] = set()
        for path in self.data_root.rglob("*.tar.gz*"):
            stems.add((path.parent, path.name.split(".tar.gz")[0]))
        out = []
        for folder, stem in sorted(stems):
            found = archive.find_parts(folder, stem)
            self.notes.extend(found.notes())
            if found.parts:
                out.append(found.parts)
        return out

    def _archive_members(self, parts: list[Path]) -> Iterator[tuple[tuple[str, str], str, bytes | archive.ScreenedOut]]:
        key = archive.archive_key(parts)
        faults: list[str] = []
        for name, data in archive.iter_members(parts, faults=faults, screen=screen_too_long(self.audio_check)):
            m = _MEMBER.search(name)
            if m and m["rtype"] in COSWARA_TYPES:
                yield (m["pid"], m["rtype"]), f"{key}{archive.ARCHIVE_SEP}{name}", data
        self.notes.extend(faults)
        unreadable = [f for f in faults if f.startswith("archive ")]
        if unreadable:
            self.archive_faults[parts[0].name.split(".tar.gz")[0]] = unreadable[0]

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """Bytes of files and split-archive members (each archive streamed once, whatever the order)."""
        return archive.read_sources(sources)

    # -- the Recording table ----------------------------------------------------------------------
    def _assemble(self, participants: list[str], rows: dict[tuple[str, str], dict], quality: dict[str, int],
                  wave_of: dict) -> pd.DataFrame:
        """One row per participant x recording type, built column by column.

        Why not a list of row dicts: a metadata file of 100,000 people without ``only_with_audio`` gives
        900,000 rows; as dicts they peaked at 2.2 GB for a 0.4 GB table. Found recordings (``rows``) are
        few and placed by position; every other cell is the ``missing`` default (with the archive fault
        of the participant's date folder as the reason, when there was one)."""
        types = list(COSWARA_TYPES)
        n_types = len(types)
        pids = pd.Series(np.repeat(np.asarray(participants, dtype=object), n_types), dtype=object)
        rtypes = pd.Series(np.tile(np.asarray(types, dtype=object), len(participants)), dtype=object)
        rec_ids = pids + "_" + rtypes
        cols: dict[str, object] = {"recording_id": rec_ids.to_numpy(dtype=object),
                                   "participant_id": pids.to_numpy(), "dataset": np.full(len(pids), self.name, object)}
        seg = [segment_fields(t) for t in types]
        for key in seg[0]:
            cols[key] = np.tile(np.asarray([f[key] for f in seg], dtype=object), len(participants))
        cols["quality"] = rec_ids.map(quality).to_numpy(dtype=object)
        missing = {"source": None, **inspect(None, "", self.audio_check, False)}
        for key, default in missing.items():
            cols[key] = np.full(len(pids), default, dtype=object)
        if self.archive_faults:
            reasons = pids.map(lambda p: self.archive_faults.get(str(wave_of.get(p))))
            hit = reasons.notna().to_numpy()
            cols["status_reason"][hit] = ("not read: " + reasons[hit]).to_numpy(dtype=object)
        index = {p: i for i, p in enumerate(participants)}
        where = {t: j for j, t in enumerate(types)}
        for (pid, rtype), info in rows.items():
            if pid in index:
                pos = index[pid] * n_types + where[rtype]
                for key, value in info.items():
                    cols[key][pos] = value
        return pd.DataFrame(cols).infer_objects()

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        """Every expected recording of every participant, with its status and reason.

        The metadata is read twice: its ``id`` column before the audio (who counts as known), the rest after,
        and with ``only_with_audio`` only for the participants whose audio was found."""
        ids = self._participant_ids()
        self.notes = []
        extracted = self._extracted()
        archives = self._archives()
        if not extracted and not archives:
            raise ClinicalTransferError(
                f"no Coswara recordings under {self.data_root}",
                "expected <date>/<id>/<type>.wav files or split archives <date>/<date>.tar.gz.aa, .ab, ...",
            )
        rows: dict[tuple[str, str], dict] = {}
        known = ids
        bar = tqdm(desc="coswara inventory", unit="rec", disable=None if progress else True)

        inspector = Inspector(self.audio_check, tag, self.workers, self.inspect_cache)

        def finished(done) -> None:
            for key, info in done:
                rows[key].update(info)
                bar.update(1)

        stray: set[str] = set()

        def add(key: tuple[str, str], source: str, data: bytes | archive.ScreenedOut | None = None,
                path: str | None = None) -> None:
            """One found recording: ``data`` (an archive member's bytes) or ``path`` (an extracted file, read
            here only when it is someone's in the metadata and its header is not past the maximum)."""
            if key[0] not in known:
                stray.add(key[0])
                return
            if key in rows:
                return
            rows[key] = {"source": source}
            if not check_audio:
                row = unvalidated(key[1])
            elif isinstance(data, archive.ScreenedOut):  # a member past the maximum, hashed but never held
                row = too_long_row(key[1], data.info, data.sha256, self.audio_check)
            elif path is None or (row := inspect_too_long(path, key[1], self.audio_check)) is None:
                data = Path(path).read_bytes() if path else data
                if data is not None:
                    finished(inspector.submit(key, key[1], data))
                    return
                row = inspect(None, key[1])
            rows[key].update(row)
            bar.update(1)

        with inspector:
            for key, path in extracted.items():
                add(key, path, path=path)
            for parts in archives:
                for key, source, data in self._archive_members(parts):
                    add(key, source, data)
            finished(inspector.finish())
        bar.close()

        if stray:
            self.notes.append(f"{len(stray)} participant(s) with audio (extracted or in archives) are not in "
                              "combined_data.csv (ignored)")
        with_audio = {k[0] for k in rows}
        without = len(ids) - len(with_audio)
        if not self.only_with_audio and without > MAX_LISTED_WITHOUT_AUDIO:
            raise ClinicalTransferError(
                f"combined_data.csv lists {len(ids):,} participants and {without:,} of them have no audio under "
                f"{self.data_root}: listing their {9 * without:,} absent recordings one by one is refused "
                f"(more than {MAX_LISTED_WITHOUT_AUDIO:,} such participants)",
                "pass --only-with-audio (those participants are then counted in the notes, not listed), or "
                "point --data-root at the whole corpus",
            )
        meta, meta_notes = self._metadata(ids, keep=with_audio if self.only_with_audio else None)
        self.notes = meta_notes + self.notes
        participants = meta["participant_id"].tolist()
        if self.only_with_audio:
            self.notes.append(f"only_with_audio: {without} participant(s) without any audio left out")
        quality = read_quality(self.metadata_root)
        wave_of = dict(zip(meta["participant_id"], meta["wave"]))
        table = self._assemble(participants, rows, quality, wave_of)
        for col in ("quality", "sample_rate_hz", "n_channels"):
            table[col] = table[col].astype("Float64").round().astype("Int64")
        table["tag_agreement"] = table["tag_agreement"].astype("boolean")
        table = table.merge(meta, on="participant_id", how="left", validate="many_to_one")
        if table["wave"].isna().any():  # fall back to the date folder the audio was found in
            folder = table["source"].str.extract(r"(?:^|/)(20\d{6})/", expand=False)
            table["wave"] = table["wave"].fillna(folder)
        extra = [c for c in table.columns if c not in COLUMNS]
        table = table[list(COLUMNS) + extra]
        return table.sort_values(["participant_id", "recording_type"], kind="stable").reset_index(drop=True)
