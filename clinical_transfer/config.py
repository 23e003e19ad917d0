"""Run configuration: dataclasses loaded from ``configs/*.toml``, validated, overridable, hashed.

Why dataclasses: every option has one name, one default and one docstring, a typo in a TOML file is an
error that names the key, and the resolved config is saved beside every output so a run can be repeated.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from clinical_transfer.errors import ClinicalTransferError


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


@dataclass
class GuardrailConfig:
    salt: str = ""
    """Salt of the pseudonymous ids. Set one per project; keep it private for real corpora."""
    min_cell: int = 10
    """Cells with fewer participants than this are suppressed."""


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
    """SAE checkpoint; empty = the embedded default SAE (GE2E layer 3 only)."""
    device: str = "auto"


@dataclass
class AnalysisConfig:
    labels: list[LabelConfig] = field(default_factory=list)
    confounds: list[str] = field(default_factory=lambda: ["age", "sex", "wave"])
    aggregation: str = "mean"
    """mean | frac_active | max: the per-recording score tested."""
    permutations: int = 50
    alpha: float = 0.05
    strata: list[str] = field(default_factory=lambda: ["sex", "age_band", "wave", "english_proficiency"])
    segment_groups: list[str] = field(default_factory=lambda: ["prompted_speech", "vowel", "cough", "breath"])
    """Groups analysed (each apart; never pooled)."""
    feature_labels: str = ""
    """Optional CSV (feature, feature_label) of atlas labels joined by feature id; disease-like labels are
    rewritten by the guardrails' term audit and the original kept in a flagged column."""


@dataclass
class DemoSettings:
    n_participants: int = 160
    seed: int = 0
    duration_s: float = 2.5


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    demo: DemoSettings = field(default_factory=DemoSettings)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 0
    """Seed of every random step (permutations, matching order ties)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """The config as written beside outputs: the salt is replaced by its SHA-256, because Coswara's
        ids are public and salt + ids would undo the pseudonyms."""
        d = asdict(self)
        salt = d["guardrails"]["salt"]
        d["guardrails"]["salt"] = "sha256:" + hashlib.sha256(salt.encode()).hexdigest() if salt else ""
        return d

    def digest(self) -> str:
        """SHA-256 of the resolved config (sorted JSON): names a run's settings in manifests."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _build(cls, data: dict[str, Any], where: str):
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
            kwargs[name] = [_build(LabelConfig, v, f"{where} [[labels]]") for v in value]
        elif is_dataclass(current):
            if not isinstance(value, dict):
                raise ClinicalTransferError(f"[{name}] in {where} must be a table", f"write it as [{name}]")
            kwargs[name] = _build(type(current), value, f"{where} [{name}]")
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


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load a TOML run config (``None`` -> defaults)."""
    if path is None:
        return RunConfig()
    p = Path(path)
    if not p.is_file():
        raise ClinicalTransferError(f"config file {p} does not exist", "pass a file from configs/, e.g. configs/coswara.toml")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ClinicalTransferError(f"{p} is not valid TOML: {exc}", "fix the syntax at the position named") from exc
    return _build(RunConfig, data, str(p))
