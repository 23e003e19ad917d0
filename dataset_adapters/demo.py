"""A deterministic synthetic corpus in Coswara's exact published layout, with planted effects.

Why: a newcomer must be able to run the whole pipeline offline, and our tests need data whose truth is
known. The corpus has Coswara's folders, per-date CSVs, ``combined_data.csv`` with the real 36 columns,
quality annotations and nine WAVs per participant (or the split ``.tar.gz.aa/.ab`` parts), so the
real adapter code path reads it. No real voice is used: all audio comes from :mod:`dataset_adapters.synth`.

What is planted (see :data:`PLANTED`):

* ``st`` (sore throat) changes voice quality — more jitter, shimmer and breathiness — in sustained
  vowels and counting only; coughs and breaths are untouched.
* ``asthma`` is confounded: it is far more common in women and in the later waves (whose recording
  devices differ), but it has no acoustic effect of its own.
* ``diabetes`` is a null label: independent of everything.
* ``covid_status`` has a positive rate that differs by wave and no acoustic effect (wave-confounded).
* Positive controls: sex sets F0 and vocal-tract length; age shifts F0 and raises jitter, shimmer and
  breathiness.
* Waves differ in recording device (noise floor, band limit).
* Faults: one missing file, one silent file, one truncated (corrupt) file, one file at 44.1 kHz.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from itertools import groupby
from math import gcd
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly
from tqdm.auto import tqdm

from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import synth
from dataset_adapters.segments import COSWARA_TYPES, segment_of

#: The 36 columns of Coswara's combined_data.csv, in the published order.
COMBINED_COLUMNS = (
    "id,a,covid_status,record_date,ep,g,l_c,l_l,l_s,rU,smoker,cold,ht,diabetes,cough,ctDate,ctScan,"
    "ctScore,diarrhoea,fever,loss_of_smell,mp,testType,test_date,test_status,um,vacc,bd,others_resp,"
    "ftg,st,ihd,asthma,others_preexist,cld,pneumonia"
).split(",")

#: Columns of the per-date CSVs the demo writes (real ones have 13-38 columns, read by name).
DATE_CSV_COLUMNS = ("id", "a", "covid_status", "record_date", "ep", "g", "l_c", "l_s", "st", "asthma", "diabetes")

LEGEND = {
    "id": "User ID", "a": "Age (number)", "covid_status": "Health status (e.g. : positive_mild, healthy,etc.)",
    "record_date": "Date when the user recorded and submitted the samples", "ep": "Proficient in English (y/n)",
    "g": "Gender (male/female/other)", "l_c": "Country", "l_l": "Locality", "l_s": "State",
    "rU": "Returning User (y/n)", "asthma": "Asthma (True/False)", "cough": "Cough (True/False)",
    "smoker": "Smoker (True/False)",
    "test_status": "Status of COVID Test (p->Positive, n->Negative, na-> Not taken Test)",
    "ht": "Hypertension  (True/False)", "cold": "Cold  (True/False)", "diabetes": "Diabetes  (True/False)",
    "diarrhoea": "Diarrheoa  (True/False)", "um": "Using Mask (y/n)", "ihd": "Ischemic Heart Disease (True/False)",
    "bd": "Breathing Difficulties (True/False)", "st": "Sore Throat (True/False)", "fever": "Fever (True/False)",
    "ftg": "Fatigue (True/False)", "mp": "Muscle Pain (True/False)",
    "loss_of_smell": "Loss of Smell & Taste (True/False)", "cld": "Chronic Lung Disease (True/False)",
    "pneumonia": "Pneumonia (True/False)", "ctScan": "CT-Scan (y/n if the user has taken a test)",
    "testType": "Type of test (RAT/RT-PCR)", "test_date": "Date of COVID Test (if taken)",
    "vacc": "Vaccination status (y->both doses, p->one dose(partially vaccinated), n->no doses)",
    "ctDate": "Date of CT-Scan", "ctScore": "CT-Score",
    "others_resp": "Respiratory illnesses other than the listed ones (True/False)",
    "others_preexist": "Pre-existing conditions other than the listed ones (True/False)",
}

#: Collection waves (date folders) and the recording device each wave used.
WAVES = {
    "20200415": dict(noise_floor_dbfs=-72.0, device_lowpass_hz=None),
    "20200814": dict(noise_floor_dbfs=-64.0, device_lowpass_hz=7000.0),
    "20210507": dict(noise_floor_dbfs=-56.0, device_lowpass_hz=5000.0),
    "20220116": dict(noise_floor_dbfs=-50.0, device_lowpass_hz=4000.0),
}

#: The ground truth the end-to-end tests assert (label column -> where it has an acoustic effect).
PLANTED = {
    "st": {"kind": "voice_quality", "groups": ("vowel", "prompted_speech")},
    "asthma": {"kind": "confounded", "confounds": ("sex", "wave"), "groups": ()},
    "diabetes": {"kind": "null", "groups": ()},
    "covid_status": {"kind": "confounded", "confounds": ("wave",), "groups": ()},
}

#: What ``st`` adds to a voice (relative jitter and shimmer, aspiration amplitude): the planted effect.
ST_PLANT = {"jitter": 0.03, "shimmer": 0.2, "breathiness": 0.05}
#: The recording types that carry the st plant: those of its planted groups (coughs and breaths are
#: synthesised from a neutral voice).
VOICED_TYPES = tuple(t for t in COSWARA_TYPES if segment_of(t).segment_group in PLANTED["st"]["groups"])

#: Fault injected -> (participant index, recording type). Indices are fixed so tests can find them.
FAULTS = {
    "missing": (3, "vowel-o"),
    "silent": (5, "counting-fast"),
    "corrupt": (7, "cough-heavy"),
    "rate_44k1": (9, "breathing-deep"),
}

_ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))


@dataclass(frozen=True)
class DemoConfig:
    """How big and in which layout the demo corpus is written (the one demo spec: run configs embed it)."""

    n_participants: int = 160
    seed: int = 0  # every synthetic choice (people, labels, voices): same seed -> byte-identical corpus
    sample_rate_hz: int = 16000
    duration_s: float = 2.5
    """Length of each recording (the real corpus has 2-30 s; short keeps the demo fast)."""
    layout: str = "extracted"
    """``extracted`` (date/id/type.wav folders) or ``split-tar`` (date/date.tar.gz.aa, .ab, ...)."""
    part_size_bytes: int = 1 << 20
    faults: bool = True


@dataclass
class _Person:
    pid: str
    wave: str
    age: int
    sex: str
    st: bool
    asthma: bool
    diabetes: bool
    covid_status: str
    ep: str
    country: str
    smoker: str
    rU: str
    record_date: str
    voice: synth.Voice


def demo_generator_digest() -> str:
    """SHA-256 of the code that synthesises the demo corpus (this module and ``synth``). Why: a corpus
    left on disk by an older generator must be rebuilt, not reused because its config matches."""
    h = hashlib.sha256()
    for module in (Path(__file__), Path(synth.__file__)):
        h.update(module.read_bytes())
    return h.hexdigest()


def _participant(i: int, cfg: DemoConfig, site: str = "a") -> _Person:
    """Participant ``i``. Site ``b`` (the replication corpus) differs in one planted fact only: its asthma
    is independent of sex and wave (the same random draws are consumed, so site ``a`` is unchanged)."""
    rng = np.random.default_rng([cfg.seed, i])
    pid = "".join(rng.choice(_ALNUM, 28))
    waves = list(WAVES)
    w = int(rng.integers(len(waves)))
    wave = waves[w]
    sex = "female" if rng.random() < 0.4 else "male"
    female = sex == "female"
    age = int(rng.integers(18, 76))
    st = bool(rng.random() < 0.3)
    u = rng.random()
    asthma = bool(u < 0.05 + 0.45 * female + 0.3 * (w >= 2)) if site == "a" else bool(u < 0.3)
    diabetes = bool(rng.random() < 0.3)
    pos = rng.random() < (0.1, 0.2, 0.5, 0.6)[w]
    if pos:
        covid = str(rng.choice(["positive_mild", "positive_moderate", "positive_asymp"], p=[0.6, 0.25, 0.15]))
    else:
        covid = str(rng.choice(["healthy", "no_resp_illness_exposed", "recovered_full"], p=[0.8, 0.1, 0.1]))
    # Age (a positive control): female F0 falls, and every voice grows rougher and breathier with age;
    # sex sets F0 and vocal-tract length. (An opposite male F0 slope was tried: its sex x age interaction
    # leaked through the linear adjustment into the sex-confounded label, so it was taken out.)
    f0 = rng.normal(205.0, 15.0) - 0.5 * (age - 18) if female else rng.normal(118.0, 10.0)
    voice = synth.Voice(
        f0_hz=float(f0),
        formant_scale=1.15 if female else 1.0,
        jitter=0.004 + 0.0002 * (age - 18) + (ST_PLANT["jitter"] if st else 0.0),
        shimmer=0.03 + 0.002 * (age - 18) + (ST_PLANT["shimmer"] if st else 0.0),
        breathiness=0.03 + 0.004 * (age - 18) + (ST_PLANT["breathiness"] if st else 0.0),
        **WAVES[wave],
    )
    folder_day = pd.Timestamp(wave)
    record_date = (folder_day - pd.Timedelta(days=int(rng.integers(0, 4)))).strftime("%Y-%m-%d")
    return _Person(
        pid=pid, wave=wave, age=age, sex=sex, st=st, asthma=asthma, diabetes=diabetes, covid_status=covid,
        ep="y" if rng.random() < 0.88 else "n",
        country="India" if rng.random() < 0.9 else "United States",
        smoker=str(rng.choice(["", "True", "False", "y", "n"], p=[0.5, 0.1, 0.05, 0.1, 0.25])),
        rU=str(rng.choice(["n", "y", ""], p=[0.7, 0.05, 0.25])),
        record_date=record_date, voice=voice,
    )


def _synthesise(p: _Person, rtype: str, cfg: DemoConfig, i: int) -> np.ndarray:
    """The audio of one recording. Voiced types carry the voice-quality effect; cough/breath do not."""
    rng = np.random.default_rng([cfg.seed, i, COSWARA_TYPES.index(rtype)])
    sr, dur = cfg.sample_rate_hz, cfg.duration_s
    neutral = synth.Voice(**{**asdict(p.voice), "jitter": 0.0, "shimmer": 0.0, "breathiness": 0.0})
    if rtype.startswith("vowel-"):
        return synth.sustained_vowel(rtype[-1], dur, p.voice, rng, sr)
    if rtype.startswith("counting-"):
        return synth.counting(dur, rtype.endswith("fast"), p.voice, rng, sr)
    if rtype.startswith("cough-"):
        return synth.cough(dur, rtype.endswith("heavy"), neutral, rng, sr)
    return synth.breathing(dur, rtype.endswith("deep"), neutral, rng, sr)


def _wav_bytes(y: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _recording_bytes(p: _Person, rtype: str, cfg: DemoConfig, i: int) -> bytes | None:
    fault = next((k for k, v in FAULTS.items() if v == (i, rtype)), None) if cfg.faults else None
    if fault == "missing":
        return None
    if fault == "silent":
        return _wav_bytes(np.zeros(int(cfg.duration_s * cfg.sample_rate_hz), np.float32), cfg.sample_rate_hz)
    y = _synthesise(p, rtype, cfg, i)
    if fault == "rate_44k1":
        g = gcd(44100, cfg.sample_rate_hz)
        y44 = resample_poly(y, 44100 // g, cfg.sample_rate_hz // g).astype(np.float32)
        return _wav_bytes(np.clip(y44, -1.0, 1.0), 44100)
    data = _wav_bytes(y, cfg.sample_rate_hz)
    if fault == "corrupt":
        return data[:40]  # the RIFF header is cut inside the fmt chunk: no decoder can read it
    return data


def planted_keys(cfg: DemoConfig, types: tuple[str, ...] = VOICED_TYPES) -> list[tuple[int, str]]:
    """``(participant index, recording type)`` of every st participant's recording of ``types`` that the corpus
    holds (fault recordings — missing, silent, corrupt, 44.1 kHz — are not in it as made), participant by
    participant: what :func:`planted_pairs` synthesises, listed without synthesising anything."""
    faults = set(FAULTS.values()) if cfg.faults else set()
    people = [i for i in range(cfg.n_participants) if _participant(i, cfg).st]
    return [(i, t) for i in people for t in types if t in VOICED_TYPES and (i, t) not in faults]


def planted_pairs(cfg: DemoConfig, keys: list[tuple[int, str]]) -> Iterator[tuple[int, str, np.ndarray, np.ndarray]]:
    """For each of ``keys`` (:func:`planted_keys`): ``(participant index, type, as written, without the
    plant)`` (the index is the generator's, i of :func:`_participant`; no corpus id).

    Why: the demo's truth is known in the audio, not in a model's features; scoring these pairs measures
    which features the plant moves. Both waveforms come from the same random streams (only the jitter,
    shimmer and aspiration amplitudes differ) and go through the corpus's 16-bit WAV round trip, so the
    counterfactual is exactly the recording a participant without st and otherwise the same would have
    made. That includes level: the synthesiser peak-normalises, so the plant's rougher voice also comes out
    1-2 dB quieter (RMS), which is part of the plant as the corpus has it (matching RMS was tried: it made
    clean voices at an unnatural level, and features reacting to that, not to the plant, came out on top).
    """
    for i, own in groupby(keys, key=itemgetter(0)):
        p = _participant(i, cfg)
        off = replace(p, voice=replace(p.voice, **{k: getattr(p.voice, k) - d for k, d in ST_PLANT.items()}))
        for _, rtype in own:
            yield i, rtype, *(sf.read(io.BytesIO(_wav_bytes(_synthesise(q, rtype, cfg, i), cfg.sample_rate_hz)),
                                      dtype="float32")[0] for q in (p, off))


def _combined_row(p: _Person, rng: np.random.Generator) -> dict:
    row = {c: "" for c in COMBINED_COLUMNS}
    row.update(
        id=p.pid, a=str(p.age), covid_status=p.covid_status, record_date=p.record_date, ep=p.ep, g=p.sex,
        l_c=p.country, l_s="Karnataka" if p.country == "India" else "California",
        l_l="Bangalore" if p.country == "India" else "San Diego", rU=p.rU, smoker=p.smoker,
        st="True" if p.st else "", asthma="True" if p.asthma else "", diabetes="True" if p.diabetes else "",
        cough="True" if rng.random() < 0.2 else "", fever="True" if rng.random() < 0.1 else "",
    )
    if p.covid_status.startswith("positive"):
        row.update(test_status="p", testType="rtpcr")
    return row


def write_demo_corpus(out: str | Path, cfg: DemoConfig = DemoConfig(), progress: bool = True) -> Path:
    """Write the demo corpus under ``out`` and return its root. Same config -> byte-identical files."""
    if cfg.layout not in ("extracted", "split-tar"):
        raise ClinicalTransferError(f"unknown demo layout {cfg.layout!r}", "use 'extracted' or 'split-tar'")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    meta_rng = np.random.default_rng([cfg.seed, 10**6])
    people = [_participant(i, cfg) for i in range(cfg.n_participants)]
    quality: dict[str, list[tuple[str, int]]] = {t: [] for t in COSWARA_TYPES}
    members: dict[str, list[tuple[str, bytes]]] = {w: [] for w in WAVES}
    for i, p in enumerate(tqdm(people, desc="demo corpus", unit="participant", disable=None if progress else True)):
        prefix = f"data/{p.wave}" if p.wave == min(WAVES) else p.wave  # the oldest real archive did this
        meta = {"id": p.pid, "date": p.record_date, "l_c": p.country, "ep": p.ep, "g": p.sex, "a": p.age,
                "covid_status": p.covid_status}
        members[p.wave].append((f"{prefix}/{p.pid}/metadata.json", json.dumps(meta, sort_keys=True).encode()))
        for rtype in COSWARA_TYPES:
            q = int(meta_rng.choice([2, 1, 0], p=[0.8, 0.15, 0.05]))
            quality[rtype].append((f"{p.pid}_{rtype}", q))
            data = _recording_bytes(p, rtype, cfg, i)
            if data is not None:
                members[p.wave].append((f"{prefix}/{p.pid}/{rtype}.wav", data))

    combined = pd.DataFrame([_combined_row(p, meta_rng) for p in people], columns=COMBINED_COLUMNS)
    combined.to_csv(root / "combined_data.csv", index=False)
    (root / "csv_labels_legend.json").write_text(json.dumps(LEGEND, indent=4))
    (root / "annotations").mkdir(exist_ok=True)
    for rtype, rows in quality.items():
        lines = ["FILENAME, QUALITY"] + [f"{name},{q}" for name, q in rows]
        (root / "annotations" / f"{rtype}_labels.csv").write_text("\n".join(lines) + "\n")
    for wave, files in members.items():
        folder = root / wave
        folder.mkdir(exist_ok=True)
        ids = {p.pid for p in people if p.wave == wave}
        combined[combined["id"].isin(ids)][list(DATE_CSV_COLUMNS)].to_csv(folder / f"{wave}.csv", index=False)
        if cfg.layout == "extracted":
            for name, data in files:
                path = folder / name.split("/", 1)[1] if not name.startswith("data/") else folder / name.split("/", 2)[2]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        else:
            _write_split_tar(folder, wave, files, cfg.part_size_bytes)
    (root / "DEMO_README.md").write_text(_DEMO_README.format(cfg=cfg))
    return root


#: Columns of the site-B manifest (the generic CSV manifest adapter's layout).
SITE_B_COLUMNS = ("path", "participant_id", "segment_type", "age", "sex", "wave", "st", "asthma", "diabetes",
                  "covid_status")


def write_site_b_corpus(out: str | Path, cfg: DemoConfig = DemoConfig(n_participants=100, seed=1, duration_s=2.0,
                                                                       faults=False),
                        progress: bool = True) -> Path:
    """A second synthetic corpus for the replication test, in the generic CSV-manifest layout.

    Other people (another seed), another layout (``manifest.csv`` + ``audio/<id>/<type>.wav``), the same
    recording devices per wave and the same planted ``st`` voice-quality effect — but ``asthma`` is
    independent of sex and wave here. So ``st``'s correlates found in the demo corpus should replicate,
    and features that moved with ``asthma`` there only through its confounds should not.
    """
    root = Path(out)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    people = [_participant(i, cfg, site="b") for i in range(cfg.n_participants)]
    for i, p in enumerate(tqdm(people, desc="site-B corpus", unit="participant", disable=None if progress else True)):
        for rtype in COSWARA_TYPES:
            rel = f"audio/{p.pid}/{rtype}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(_wav_bytes(_synthesise(p, rtype, cfg, i), cfg.sample_rate_hz))
            rows.append({"path": rel, "participant_id": p.pid, "segment_type": rtype, "age": p.age, "sex": p.sex,
                         "wave": p.wave, "st": str(p.st), "asthma": str(p.asthma), "diabetes": str(p.diabetes),
                         "covid_status": p.covid_status})
    pd.DataFrame(rows, columns=list(SITE_B_COLUMNS)).to_csv(root / "manifest.csv", index=False)
    (root / "DEMO_README.md").write_text(_SITE_B_README.format(cfg=cfg))
    return root


_SITE_B_README = """# Replication demo corpus, site B (synthetic; NON-DIAGNOSTIC)

Written by `clinical-transfer demo-corpus --site b` with {cfg}.
Generic CSV-manifest layout (`--dataset manifest`). Every sound is synthetic.
Planted: `st` changes voice quality in vowels and counting (as in the demo corpus); `asthma` is independent
of sex and wave here (in the demo corpus it is confounded with both); `diabetes` is null.
"""


def _write_split_tar(folder: Path, stem: str, files: list[tuple[str, bytes]], part_size: int) -> None:
    """One gzip'd tar, split into ``stem.tar.gz.aa, .ab, ...`` like the published corpus (mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    for k in range(0, max(1, -(-len(blob) // part_size))):
        suffix = chr(ord("a") + k // 26) + chr(ord("a") + k % 26)
        (folder / f"{stem}.tar.gz.{suffix}").write_bytes(blob[k * part_size : (k + 1) * part_size])


_DEMO_README = """# Demo corpus (synthetic; NON-DIAGNOSTIC)

Written by `clinical-transfer demo-corpus` with {cfg}.
Layout and file formats follow the published Coswara corpus; every sound is synthetic.

Planted effects (the truth the pipeline must find):
- `st` (sore throat): more jitter, shimmer and breathiness in vowels and counting; no effect on cough/breath.
- `asthma`: confounded with sex and collection wave; no acoustic effect of its own.
- `diabetes`: null label.
- `covid_status`: positive rate differs by wave; no acoustic effect.
- Positive controls: sex (F0, vocal-tract length), age (F0, jitter, shimmer, breathiness). Waves differ in recording device.

Faults: participant 3 has no vowel-o, participant 5's counting-fast is silent, participant 7's cough-heavy
is truncated (unreadable), participant 9's breathing-deep is sampled at 44.1 kHz.
"""
