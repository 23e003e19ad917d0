"""The typed result of a run: what reporting renders, what the CLI prints, what a manifest records.

Why a dataclass and not a dict: reporting and the CLI read fields by name, so a renamed or missing
field is an AttributeError at the point of use, not a silent ``KeyError``-free ``None`` three modules
away; and like statsmodels' results, the object knows how to summarise itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_transfer import guardrails
from clinical_transfer.stats import OverlayResult

NULL_COLUMNS = ("segment_group", "n_permutations", "null_discovery_rate", "null_any_discovery_rate",
                "maxt_threshold_95")
DESIGN_COLUMNS = ("segment_group", "n_participants", "n_params", "df_resid", "n_zero_score", "coarsened", "reason")
REPLICATION_COLUMNS = ("segment_group", "n_discovered", "n_replicated", "replication_rate", "reason")


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
    sae_fit: dict = field(default_factory=dict)
    """A corpus-fit SAE's split sizes, held-out quality and seed stability (empty for a given SAE)."""
    stability: Any = None
    """Seed stability of every SAE feature (an array; None when only one seed exists)."""
    evidence: dict = field(default_factory=dict)
    """Per label, the evidence packets written (segment group, feature, verdict, top descriptor)."""
    planted: Any = None
    """Demo only: the planted-truth probe (per segment group x feature, how far the st plant moves it)."""
    top_frames: dict = field(default_factory=dict)
    """Counts of the top-activating frame search (features located, demo thumbnails drawn)."""
    corpus: dict = field(default_factory=dict)
    """The corpus's licence and citation (from the adapter registry), carried into manifest and report."""
    manifest: dict = field(default_factory=dict)

    def target(self, label: str) -> pd.DataFrame:
        """The label's own overlay rows (positive controls excluded)."""
        table = self.overlays[label].overlay
        return table[table["role"] == "target"]

    def permutation_null(self, label: str) -> pd.DataFrame:
        """The label's Freedman–Lane null summary per segment group (empty when none ran)."""
        return self._controls(label, "permutation_null", NULL_COLUMNS)

    def _controls(self, label: str, kind: str, columns: tuple[str, ...]) -> pd.DataFrame:
        ctl = self.overlays[label].controls
        if "kind" not in ctl:
            return pd.DataFrame()
        rows = ctl[ctl["kind"] == kind]
        if "role" in rows.columns:
            rows = rows[rows["role"] == "target"]
        return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)

    def design(self, label: str) -> pd.DataFrame:
        """The label's design diagnostics per segment group (participants, parameters, residual df,
        structurally-zero scores, coarsened confounds, why a family was not estimable)."""
        return self._controls(label, "design", DESIGN_COLUMNS)

    def replication(self, label: str) -> pd.DataFrame:
        """The label's replication split per segment group (discoveries in one half replicated in the other)."""
        return self._controls(label, "replication", REPLICATION_COLUMNS)

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
            rep = self.replication(label)
            found = rep.set_index("segment_group")[["n_discovered", "n_replicated"]].dropna().to_dict("index") if (
                "n_discovered" in rep) else {}
            lines.append(f"{label}:")
            for group, text in counts.items():
                if found.get(group, {}).get("n_discovered", 0) > 0:
                    text += (f"; replicated {int(found[group]['n_replicated'])} of "
                             f"{int(found[group]['n_discovered'])} half-sample discoveries")
                lines.append(f"  {group:16s} {text}")
        return "\n".join(lines)

    def write(self, out: str | Path) -> list[Path]:
        """Write every label's overlay tables and the run manifest through the guardrails."""
        out = Path(out)
        written = []
        for label, res in self.overlays.items():
            written += res.write(out / "overlays" / label)
        written.append(guardrails.write_json(self.manifest, out / "run_manifest.json"))
        return written
