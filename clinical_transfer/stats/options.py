"""Options of an overlay (one dataclass; the ``stats`` CLI flags map one to one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clinical_transfer import guardrails
from clinical_transfer.stats.controls import NUISANCE


@dataclass
class OverlayConfig:
    """Options of an overlay (CLI flags map one to one)."""

    confounds: list[str] = field(default_factory=list)
    group_col: str | None = "segment_group"
    cluster_col: str | None = "participant_id"
    strata: list[str] | None = None
    """Split variables; None -> :data:`clinical_transfer.taxonomy.DEFAULT_STRATA` (those present)."""
    match_on: list[str] | None = None
    """Exact-matching strata; None -> the categorical confounds plus age_band."""
    permutations: int = 1000
    """Freedman–Lane permutations (whole participants) for the max-T family-wise p; 0 skips the check."""
    match_draws: int = 5
    """Exact-matching draws (different seeded orders) whose agreement with the full fit is the matched check."""
    min_resid_df: int = 20
    """A family with fewer residual degrees of freedom (participants - parameters) is not estimable."""
    max_zero_fraction: float = 0.1
    """... nor one where more participants than this are alone in a confound cell (zero scores)."""
    replication: bool = True
    """Discovery / replication halves of the participants (stable seeded hash)."""
    seed: int = 0
    alpha: float = 0.05
    min_cell: int = guardrails.DEFAULT_MIN_CELL
    min_stratum: int = 20
    """Participants a side for a stratum to be estimated; never below ``min_cell``."""
    nuisance: list[str] = field(default_factory=lambda: list(NUISANCE))
    positive_controls: list[str] = field(default_factory=lambda: ["age", "sex"])
    confirm_top: int = 5
    strict: bool = True
    """Raise when a group cannot be fitted at all; False records it as suppressed with the reason."""
