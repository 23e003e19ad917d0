"""ICBHI 2017 Respiratory Sound Database (Rocha et al. 2019): chest recordings cut into respiratory cycles.

Facts this adapter relies on (``shared/design/CORPORA.md``):

* ``ICBHI_final_database/`` holds paired ``<stem>.wav`` and ``<stem>.txt``; the stem is
  ``PPP_RRR_LL_M_DEVICE`` (patient 101-226, recording index such as ``1b1``, chest location ``Tc Al Ar Pl
  Pr Ll Lr``, mode ``sc``/``mc``, device ``AKGC417L Meditron LittC2SE Litt3200``);
* the cycle file: one cycle per line, tab-separated, no header — start s, end s, crackles 0/1, wheezes 0/1;
* beside the audio (or one folder up): ``ICBHI_Challenge_diagnosis.txt`` (``PPP<TAB>diagnosis``, per
  patient), ``ICBHI_Challenge_demographic_information.txt`` (tab-separated, CRLF, no header: patient,
  age, sex M/F, adult BMI, child weight, child height; ``NA`` missing) and
  ``ICBHI_challenge_train_test.txt`` (``stem<TAB>train|test``, by recording).

Every respiratory cycle is one recording of segment group ``breath`` (task ``breath``): its source is
``<wav>#t=<start>,<end>`` (a W3C media fragment), cut when read, so nothing is written to disk.

Data dictionary (what the Recording table carries):

=====================  ============================================================================
column                 meaning
=====================  ============================================================================
``participant_id``     the patient number (``101`` ... ``226``)
``recording_id``       ``<stem>_c<NN>``: cycle NN (from 01) of the recording
``icbhi_recording``    the stem (cycles of one recording share it)
``crackles``, ``wheezes``  the cycle's annotation (True/False)
``diagnosis``          the patient's diagnosis as published (COPD, Healthy, URTI, ...)
``healthy``            True for Healthy, False for any other diagnosis
``chest_location``, ``mode``, ``device``   from the stem: recording confounds
``icbhi_split``        the official train/test assignment of the recording
``age``, ``sex``       years (fractional for infants; 0-120 else unknown), M/F -> male/female
``bmi``, ``child_weight_kg``, ``child_height_cm``    as published (``NA`` unknown)
``wave``               the device (the collection setting differs by device); a confound by default
=====================  ============================================================================
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters.base import normalise_demographics
from dataset_adapters.inventory import finish_table, inspect, unvalidated
from dataset_adapters.segments import segment_fields
from dataset_adapters.tagger import TaggerConfig

FOLDER = "ICBHI_final_database"
DIAGNOSIS = "ICBHI_Challenge_diagnosis.txt"
DEMOGRAPHICS = "ICBHI_Challenge_demographic_information.txt"
SPLIT = "ICBHI_challenge_train_test.txt"
STEM = re.compile(r"^(?P<patient>\d{3})_(?P<index>[0-9a-z]+)_(?P<loc>Tc|Al|Ar|Pl|Pr|Ll|Lr)_(?P<mode>sc|mc)_"
                  r"(?P<device>[A-Za-z0-9]+)$")
FRAGMENT = re.compile(r"^(?P<path>.+)#t=(?P<start>[0-9.]+),(?P<end>[0-9.]+)$")


def cycle_source(path: Path | str, start: float, end: float) -> str:
    return f"{path}#t={start:.3f},{end:.3f}"


def read_cycles(sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
    """WAV bytes of each ``<wav>#t=start,end`` source: the file read once per run of its cycles, the cycle
    cut at sample precision and written as 32-bit float WAV in memory (deterministic bytes)."""
    cache: tuple[str, np.ndarray, int] | None = None
    for src in sources:
        m = FRAGMENT.match(src)
        path = m["path"] if m else src
        if cache is None or cache[0] != path:
            try:
                x, sr = sf.read(path, dtype="float32", always_2d=True)
                cache = (path, x, int(sr))
            except (OSError, RuntimeError, sf.LibsndfileError):
                cache = None
                yield src, (Path(path).read_bytes() if Path(path).is_file() else None)  # let the checks say why
                continue
        _, x, sr = cache
        if m is None:
            seg = x
        else:
            seg = x[int(round(float(m["start"]) * sr)):int(round(float(m["end"]) * sr))]
        buf = io.BytesIO()
        sf.write(buf, seg, sr, format="WAV", subtype="FLOAT")
        yield src, buf.getvalue()


def _find(root: Path, name: str) -> Path | None:
    for folder in (root, root.parent, root.parent / "ICBHI_final_database"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_tab(path: Path, ncols: int, what: str) -> list[list[str]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = re.split(r"\t| +", line.strip())
        if len(parts) < ncols:
            raise ClinicalTransferError(f"{path.name} line {i} has {len(parts)} field(s), {what} needs {ncols}",
                                        "use the file as published (tab-separated)")
        rows.append(parts)
    return rows


class IcbhiAdapter:
    """ICBHI 2017 as a Recording table of respiratory cycles.

    Parameters
    ----------
    data_root:
        ``ICBHI_final_database/`` (or the folder holding it); the three challenge text files are looked for
        beside the audio and one folder up.
    """

    name = "icbhi"

    def __init__(self, data_root: str | Path, metadata_root: str | Path | None = None, only_with_audio: bool = False,
                 audio_check: AudioCheckConfig = AudioCheckConfig(min_duration_s=0.2), tagger: TaggerConfig = TaggerConfig()):
        root = Path(data_root)
        if (root / FOLDER).is_dir():
            root = root / FOLDER
        if not root.is_dir():
            raise ClinicalTransferError(f"data root {root} does not exist", f"pass the {FOLDER} folder")
        self.data_root = root
        self.metadata_root = Path(metadata_root) if metadata_root is not None else root
        self.only_with_audio = only_with_audio
        self.audio_check = audio_check
        self.tagger = tagger
        self.notes: list[str] = []
        self.files = {}
        for name in (DIAGNOSIS, DEMOGRAPHICS, SPLIT):
            found = _find(self.metadata_root, name)
            if found is None:
                raise ClinicalTransferError(f"{name} not found beside {self.metadata_root} or one folder up",
                                            "keep the challenge's text files with the database, or pass --metadata-root")
            self.files[name] = found

    def metadata(self) -> pd.DataFrame:
        """One row per patient: diagnosis and demographics."""
        diag = pd.DataFrame(_read_tab(self.files[DIAGNOSIS], 2, "a diagnosis"), dtype=str).iloc[:, :2]
        diag.columns = ["participant_id", "diagnosis"]
        demo = pd.DataFrame([r[:6] + [""] * (6 - len(r[:6])) for r in _read_tab(self.files[DEMOGRAPHICS], 3,
                                                                                  "a demographic row")], dtype=str)
        demo.columns = ["participant_id", "age", "sex", "bmi", "child_weight_kg", "child_height_cm"]
        demo = demo.replace({"NA": pd.NA, "": pd.NA})
        for col in ("bmi", "child_weight_kg", "child_height_cm"):
            demo[col] = pd.to_numeric(demo[col], errors="coerce")
        meta = diag.merge(demo, on="participant_id", how="outer", validate="one_to_one")
        meta["healthy"] = meta["diagnosis"].map(lambda d: pd.NA if pd.isna(d) else d == "Healthy").astype("boolean")
        return normalise_demographics(meta, self.notes).sort_values("participant_id").reset_index(drop=True)

    def recordings(self, check_audio: bool = True, tag: bool = True, progress: bool = True) -> pd.DataFrame:
        meta = self.metadata()
        split = dict((r[0], r[1]) for r in _read_tab(self.files[SPLIT], 2, "a split row"))
        wavs = sorted(self.data_root.glob("*.wav"))
        if not wavs:
            raise ClinicalTransferError(f"no .wav recordings in {self.data_root}", f"pass the {FOLDER} folder")
        rows, sources, odd = [], [], 0
        for wav in wavs:
            m = STEM.match(wav.stem)
            if m is None:
                odd += 1
                continue
            ann = wav.with_suffix(".txt")
            cycles = _read_tab(ann, 4, "a cycle") if ann.is_file() else []
            base = {"participant_id": m["patient"], "icbhi_recording": wav.stem, "chest_location": m["loc"],
                    "mode": m["mode"], "device": m["device"], "wave": m["device"],
                    "icbhi_split": split.get(wav.stem, pd.NA)}
            if not cycles:
                rows.append({**base, "recording_id": f"{wav.stem}_c00", "source": None, "crackles": pd.NA,
                             "wheezes": pd.NA, "_reason": "no cycle annotation (.txt) beside the recording"})
                continue
            try:
                length = sf.info(wav).duration
            except (RuntimeError, sf.LibsndfileError):
                length = np.inf  # unreadable: the audio checks give the reason
            for i, (start, end, crackles, wheezes) in enumerate((c[:4] for c in cycles), start=1):
                start, end = float(start), float(end)
                row = {**base, "recording_id": f"{wav.stem}_c{i:02d}", "crackles": crackles == "1",
                       "wheezes": wheezes == "1"}
                if start >= length:  # annotation times beyond the audio (happens in the published files)
                    rows.append({**row, "source": None, "_reason": f"cycle {start:.2f}-{end:.2f} s starts after "
                                                                   f"the recording ends ({length:.2f} s)"})
                    continue
                src = cycle_source(wav, start, end)
                note = f"cycle end {end:.2f} s beyond the recording ({length:.2f} s): cut at its end" if (
                    end > length + 1e-3) else ""
                rows.append({**row, "source": src, "_reason": "", "_note": note})
                sources.append(src)
        if odd:
            self.notes.append(f"{odd} .wav file(s) whose name is not PPP_RRR_LL_M_DEVICE ignored")
        cut = read_cycles(sources) if check_audio else iter(())  # streamed in row order: one cycle in memory
        rtype = "breath"
        out = []
        for r in tqdm(rows, desc="icbhi inventory", unit="cycle", disable=None if progress else True):
            reason, note = r.pop("_reason"), r.pop("_note", "")
            if r["source"] is None:
                info = {**inspect(None, rtype), "status_reason": reason}
            elif check_audio:
                src, data = next(cut)
                assert src == r["source"]  # same order by construction
                info = inspect(data, rtype, self.audio_check, tag)
                if note:
                    info["status_reason"] = "; ".join(x for x in (info["status_reason"], note) if x)
            else:
                info = unvalidated(rtype)
            out.append({**r, "dataset": self.name, **segment_fields(rtype), "quality": pd.NA, **info})
        table = pd.DataFrame.from_records(out)
        table = table.merge(meta, on="participant_id", how="left", validate="many_to_one")
        unknown = sorted(set(table["participant_id"]) - set(meta["participant_id"]))
        if unknown:
            self.notes.append(f"{len(unknown)} patient(s) with audio have no diagnosis/demographic row")
        for col in ("crackles", "wheezes"):
            table[col] = table[col].astype("boolean")
        return finish_table(table)

    def read_sources(self, sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        return read_cycles(sources)
