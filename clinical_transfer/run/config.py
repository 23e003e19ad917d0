"""Run configuration: dataclasses loaded from ``configs/*.toml``, validated, overridable, hashed.

Why dataclasses: every option has one name, one default and one docstring, a typo in a TOML file is an
error that names the key, a value outside its allowed set is an error *at load* (before any audio is
read, not after the whole corpus is scored), and the resolved config is saved beside every output so a
run can be repeated.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from clinical_transfer.encoders.registry import encoder_names
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.guardrails import DEFAULT_MIN_CELL
from clinical_transfer.hashing import salt_digest, sha256_text
from clinical_transfer.taxonomy import AGGREGATIONS, ANALYSED_GROUPS, DEFAULT_STRATA, SEGMENT_GROUPS
from dataset_adapters import adapter_entry, available_adapters
from dataset_adapters.demo import DemoConfig

#: The folder of the shipped run configs (``configs/`` at the repository root).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DatasetConfig:
    name: str = "coswara"
    """Adapter name (see ``clinical-transfer datasets``)."""
    data_root: str = ""
    """Corpus folder; empty means it must come from ``--data-root`` (or ``--demo``)."""
    metadata_root: str = ""
    """Folder holding the corpus metadata when it is not the data root."""
    only_with_audio: bool = False
    """Keep only participants with at least one audio file (partial copies)."""


@dataclass
class AudioConfig:
    min_duration_s: float = 0.5
    """Recordings shorter than this are ``too_short``."""
    silent_peak_dbfs: float = -60.0
    """Recordings whose peak stays below this are ``silent``."""
    max_duration_s: float = 600.0
    """Recordings longer than this (from the header, before decoding) are ``too_long``: bounded memory."""


@dataclass
class GuardrailConfig:
    salt: str = ""
    """Salt of the pseudonymous ids. Set one per project; keep it private for real corpora."""
    min_cell: int = DEFAULT_MIN_CELL
    """Cells with fewer participants than this are suppressed (never below the guardrail floor, 10)."""


@dataclass
class LabelConfig:
    column: str = ""
    """Label column of the corpus metadata (e.g. st, asthma, covid_status)."""
    positive: list[str] = field(default_factory=list)
    """Values of the positive side (wildcards allowed); empty = the label's own two levels."""
    negative: list[str] = field(default_factory=list)
    missing_as: str = ""
    """Value that blank answers take for this analysis ("" keeps them unknown and excluded). Coswara's
    symptom columns are True or blank, so a True-vs-not-reported contrast needs missing_as = "False";
    the report states it."""


@dataclass
class EncoderConfig:
    name: str = "ge2e"
    """ge2e (offline default) | gemma | hf-encoder."""
    model: str = ""
    """Local model folder for gemma / hf-encoder."""
    layer: int = 3
    sae: str = ""
    """SAE checkpoint; "fit" = a label-blind SAE fit to the corpus ([sae_fit]; run/fit_sae.py); "embedded" =
    the embedded demo SAE; empty = "fit" for a real corpus, "embedded" for the demo (the run records which)."""
    device: str = "auto"


@dataclass
class AnalysisConfig:
    labels: list[LabelConfig] = field(default_factory=list)
    confounds: list[str] = field(default_factory=lambda: ["age", "sex", "wave"])
    aggregation: str = "mean"
    """mean | frac_active | max: the per-recording score tested."""
    permutations: int = 1000
    """Freedman–Lane permutations per family (max-T family-wise p); 0 leaves robustness untested."""
    alpha: float = 0.05
    strata: list[str] = field(default_factory=lambda: list(DEFAULT_STRATA))
    """Split variables of the robustness checks (the corpus's default config adds its own)."""
    min_stratum: int = 20
    """Participants a side for a confound stratum to be estimated (never below [guardrails] min_cell)."""
    evidence: bool = True
    """Write an evidence packet per robust correlate and per top-5 feature of every family."""
    evidence_acoustics: bool = True
    """Extract eGeMAPS descriptors for the packets (which interpretable acoustics a feature tracks)."""
    top_frames: bool = True
    """Locate each packet feature's top-activating frames: thumbnails for the synthetic demo, pseudonymous
    recording ids + time offsets in the private folder for a real corpus (never audio in the output)."""
    adjust_acoustic: int = 0
    """K > 0: every overlay is run again with the top-K eGeMAPS principal components (per segment group) as
    extra confounds, reported beside the plain one (``<label>+acousticK``): what survives plain acoustics."""
    segment_groups: list[str] = field(default_factory=lambda: list(ANALYSED_GROUPS))
    """Groups analysed (each apart; never pooled)."""
    feature_labels: str = ""
    """Optional CSV (feature, feature_label) of atlas labels joined by feature id; disease-like labels are
    rewritten by the guardrails' term audit and the original kept in a flagged column."""


@dataclass
class SAEFitConfig:
    """How a corpus-fit SAE is made (``[sae_fit]``; see :mod:`clinical_transfer.run.fit_sae`)."""

    fraction: float = 0.25
    """Share of participants in the dictionary split."""
    quality_fraction: float = 0.15
    """Share of participants whose held-out states measure the SAE's quality (never trained on)."""
    fit_on: str = "split"
    """split: the overlay leaves the dictionary split out; all: train on everyone but the quality split."""
    expansion: int = 8
    k: int = 32
    steps: int = 600
    batch_size: int = 4096
    seeds: int = 3
    """SAEs trained with different seeds (feature stability across them); 1 = no stability."""


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    """The synthetic demo corpus of ``run-overlay --demo`` (one spec: :class:`dataset_adapters.demo.DemoConfig`)."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sae_fit: SAEFitConfig = field(default_factory=SAEFitConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 0
    """Seed of every random step (permutations, matching order ties)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """The config as written beside outputs: the salt is replaced by its slow digest
        (:func:`~clinical_transfer.hashing.salt_digest`), because Coswara's ids are public and salt + ids
        would undo the pseudonyms."""
        d = asdict(self)
        salt = d["guardrails"]["salt"]
        d["guardrails"]["salt"] = salt_digest(salt) if salt else ""
        return d

    def digest(self) -> str:
        """SHA-256 of the public config (sorted JSON): names a run's settings in manifests. Of the public
        form, not the raw one: a hash over the plain salt would be as guessable as the salt's own."""
        return sha256_text(json.dumps(self.public_dict(), sort_keys=True))


def build(cls, data: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ClinicalTransferError(
            f"unknown key(s) {', '.join(unknown)} in {where}",
            f"use only: {', '.join(sorted(known))}",
        )
    kwargs = {}
    default = cls()
    for name, value in data.items():
        current = getattr(default, name)
        if name == "labels":
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ClinicalTransferError(f"labels in {where} must be a list of tables",
                                            "write each as [[analysis.labels]] with column = ...")
            kwargs[name] = [build(LabelConfig, v, f"{where} [[labels]]") for v in value]
        elif is_dataclass(current):
            if not isinstance(value, dict):
                raise ClinicalTransferError(f"[{name}] in {where} must be a table", f"write it as [{name}]")
            kwargs[name] = build(type(current), value, f"{where} [{name}]")
        else:
            expected = type(current)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ClinicalTransferError(
                    f"{name} in {where} is {value!r}, not a {expected.__name__}",
                    f"give {name} a {expected.__name__} value",
                )
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ClinicalTransferError(f"{name} in {where} must be a list of strings", f"quote every {name} entry")
            kwargs[name] = value
    return cls(**kwargs)


def _one_of(value: Any, allowed: tuple, name: str, where: str) -> None:
    if value not in allowed:
        raise ClinicalTransferError(f"{name} in {where} is {value!r}", f"use one of: {', '.join(map(str, allowed))}")


#: Columns that identify a person, a recording or a file: never a confound, stratum or label.
IDENTIFIERS = ("participant_id", "recording_id", "source", "audio_sha256", "id")


def validate(cfg: RunConfig, where: str = "the config") -> RunConfig:
    """Check allowed values (not only types), so a typo fails at load rather than after scoring."""
    _one_of(cfg.dataset.name, tuple(available_adapters()), "[dataset] name", where)
    _one_of(cfg.encoder.name, encoder_names(descriptors=True), "[encoder] name", where)
    _one_of(cfg.encoder.device, DEVICES, "[encoder] device", where)
    a = cfg.analysis
    _one_of(a.aggregation, AGGREGATIONS, "[analysis] aggregation", where)
    for g in a.segment_groups:
        _one_of(g, SEGMENT_GROUPS, "[analysis] segment_groups entry", where)
    if not 0.0 < a.alpha <= 0.5:
        raise ClinicalTransferError(f"[analysis] alpha in {where} is {a.alpha!r}", "give an FDR level in (0, 0.5], e.g. 0.05")
    if a.adjust_acoustic < 0:
        raise ClinicalTransferError(f"[analysis] adjust_acoustic in {where} is {a.adjust_acoustic}", "give 0 (off) or K >= 1")
    if a.permutations < 0:
        raise ClinicalTransferError(f"[analysis] permutations in {where} is {a.permutations}", "give 0 (none) or more")
    f = cfg.sae_fit
    _one_of(f.fit_on, ("split", "all"), "[sae_fit] fit_on", where)
    if not (0.0 < f.fraction and 0.0 < f.quality_fraction and f.fraction + f.quality_fraction < 1.0) or min(
            f.seeds, f.steps, f.k, f.expansion, f.batch_size) < 1:
        raise ClinicalTransferError(f"[sae_fit] values in {where} are out of range",
                                    "fraction, quality_fraction > 0 with a sum below 1; seeds, steps, k, expansion, "
                                    "batch_size >= 1")
    if a.min_stratum < cfg.guardrails.min_cell:
        raise ClinicalTransferError(f"[analysis] min_stratum in {where} is {a.min_stratum}, below min_cell "
                                    f"{cfg.guardrails.min_cell}", f"use {cfg.guardrails.min_cell} or more")
    if not 0 < cfg.audio.min_duration_s < cfg.audio.max_duration_s:
        raise ClinicalTransferError(f"[audio] durations in {where} are out of range",
                                    "give 0 < min_duration_s < max_duration_s (seconds)")
    if cfg.guardrails.min_cell < DEFAULT_MIN_CELL:
        raise ClinicalTransferError(f"[guardrails] min_cell in {where} is {cfg.guardrails.min_cell}",
                                    f"use {DEFAULT_MIN_CELL} or more: smaller cells would be published")
    for name, values in (("confounds", a.confounds), ("strata", a.strata)):
        ids = [c for c in values if c in IDENTIFIERS]
        if ids:
            raise ClinicalTransferError(f"[analysis] {name} in {where} lists {', '.join(ids)}, an identifier",
                                        "use participant attributes (e.g. age, sex, wave): an id as a confound "
                                        "is one parameter per person")
    for lab in a.labels:
        if lab.column in IDENTIFIERS:
            raise ClinicalTransferError(f"a [[analysis.labels]] column in {where} is {lab.column!r}, an identifier",
                                        "use a label column")
        if not lab.column:
            raise ClinicalTransferError(f"a [[analysis.labels]] entry in {where} has no column", "add column = ...")
    return cfg


def default_config_path(dataset: str) -> Path | None:
    """The shipped default config of a corpus adapter (``configs/<name>.toml``), if there is one."""
    name = adapter_entry(dataset).default_config
    path = CONFIG_DIR / name if name else None
    return path if path is not None and path.is_file() else None


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load and validate a TOML run config (``None`` -> defaults)."""
    if path is None:
        return RunConfig()
    p = Path(path)
    if not p.is_file():
        raise ClinicalTransferError(f"config file {p} does not exist", "pass a file from configs/, e.g. configs/coswara.toml")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ClinicalTransferError(f"{p} is not valid TOML: {exc}", "fix the syntax at the position named") from exc
    return validate(build(RunConfig, data, str(p)), str(p))
