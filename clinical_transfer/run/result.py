"""The typed result of a run: what reporting renders, what the CLI prints, what a manifest records.

Why a dataclass and not a dict: reporting and the CLI read fields by name, so a renamed or missing
field is an AttributeError at the point of use, not a silent ``KeyError``-free ``None`` three modules
away; and like statsmodels' results, the object knows how to summarise itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clinical_transfer import guardrails
from clinical_transfer.stats import OverlayResult

NULL_COLUMNS = ("segment_group", "null_discovery_rate", "null_any_discovery_rate", "maxt_threshold_95")


@dataclass
class InventorySummary:
    n_participants: int
    n_recordings: int
    excluded: pd.DataFrame
    """Recordings not analysed, by segment group, status and reason."""


@dataclass
class ModelIdentity:
    encoder: str
    layer: int
    layer_convention: str
    sae: str
    """The SAE checkpoint path, or the embedded default SAE's description."""


@dataclass
class RunResult:
    """Everything a ``run-overlay`` run produced (group-level only; nothing per person)."""

    dataset: str
    corpus_note: str
    config_source: str
    """Which config file the run used (a corpus's default config when none was given)."""
    inventory: InventorySummary
    n_scored: int
    models: ModelIdentity
    aggregation: str
    confounds: list[str]
    strata: list[str]
    min_cell: int
    overlays: dict[str, OverlayResult] = field(default_factory=dict)
    """Per label column, its overlay result (target rows and positive controls)."""
    missing_as: dict[str, str] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def target(self, label: str) -> pd.DataFrame:
        """The label's own overlay rows (positive controls excluded)."""
        table = self.overlays[label].overlay
        return table[table["role"] == "target"]

    def permutation_null(self, label: str) -> pd.DataFrame:
        """The label's permutation-null summary per segment group (empty when none ran)."""
        ctl = self.overlays[label].controls
        if "kind" not in ctl:
            return pd.DataFrame()
        null = ctl[ctl["kind"] == "permutation_null"]
        return null[[c for c in NULL_COLUMNS if c in null.columns]]

    def positive_controls(self) -> pd.DataFrame:
        """Age/sex positive-control summaries of every label's overlay."""
        parts = []
        for res in self.overlays.values():
            ctl = res.controls
            if "kind" in ctl and (ctl["kind"] == "positive_control").any():
                parts.append(ctl[ctl["kind"] == "positive_control"][["label", "segment_group", "n_significant",
                                                                     "max_abs_t"]])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def summary(self) -> str:
        """Verdict counts per label and segment group, for the terminal."""
        lines = []
        for label in self.overlays:
            counts = self.target(label).groupby("segment_group")["verdict"].agg(
                lambda v: ", ".join(f"{k} {n}" for k, n in v.value_counts().items()))
            lines.append(f"{label}:")
            lines += [f"  {group:16s} {text}" for group, text in counts.items()]
        return "\n".join(lines)

    def write(self, out: str | Path) -> list[Path]:
        """Write every label's overlay tables and the run manifest through the guardrails."""
        out = Path(out)
        written = []
        for label, res in self.overlays.items():
            written += res.write(out / "overlays" / label)
        written.append(guardrails.write_json(self.manifest, out / "run_manifest.json"))
        return written
