"""``clinical-transfer replicate``: does a frozen overlay's correlate hold in a second corpus?

Stages: read the frozen overlay (``reports/frozen/NAME``: MANIFEST.json + one table per label) -> load
the encoder and SAE it names and **verify their identity** against the manifest (a different model or
dictionary would make "the same feature" meaningless) -> inventory and score the second corpus (the
same cache and private store as every run) -> the same adjusted statistics on the mapped label and
segment groups -> :func:`clinical_transfer.stats.replication.replication_tables` -> tables, a report
and a manifest, all through the guardrail writers.

Speech groups are only ever mapped onto speech groups and cough/breath onto cough/breath (never pooled).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from clinical_transfer import __version__, guardrails
from clinical_transfer.errors import ClinicalTransferError, named, reading
from clinical_transfer.hashing import sha256_file
from clinical_transfer.reporting.freeze import RESTORE, read_frozen_manifest
from clinical_transfer.run.config import RunConfig
from clinical_transfer.run.inventory import run_inventory
from clinical_transfer.run.models import resolve_models
from clinical_transfer.run.overlay import _corpus_terms, analysis_meta, feature_table
from clinical_transfer.run.ray_engine import score_corpus
from clinical_transfer.stats import LabelSpec, OverlayConfig, overlay
from clinical_transfer.stats.replication import group_kind, replication_tables
from clinical_transfer.store import ScoreStore

#: The verdicts whose features a replication tests by default: what the original run reported.
DEFAULT_VERDICTS = ("robust correlate",)


@dataclass
class ReplicationSpec:
    """What to replicate and how the second corpus names it."""

    frozen: Path
    label: str
    """The label as the frozen overlay names it (its table ``<label>.csv``)."""
    column: str = ""
    """The label column in the second corpus (default: the same name)."""
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    missing_as: str | None = None
    """Default: the frozen label's own setting (e.g. symptoms: True vs not reported)."""
    group_map: dict[str, str] = field(default_factory=dict)
    """Frozen segment group -> second corpus's group (default: the same name)."""
    verdicts: tuple[str, ...] = DEFAULT_VERDICTS
    draws: int = 1000
    """Random feature sets for the null replication rate."""
    model: str | None = None
    """Local model folder, where the frozen manifest's path does not exist on this machine."""
    sae: str | None = None
    device: str = "auto"


@dataclass
class ReplicationResult:
    features: pd.DataFrame
    families: pd.DataFrame
    manifest: dict
    text: str


def _read_frozen(spec: ReplicationSpec) -> tuple[dict, pd.DataFrame]:
    frozen = Path(spec.frozen)
    manifest = read_frozen_manifest(frozen)
    table = frozen / f"{spec.label}.csv"
    if not table.is_file():
        have = sorted(p.stem for p in frozen.glob("*.csv") if p.stem != "verdict_counts")
        raise ClinicalTransferError(f"the frozen overlay {frozen.name} has no table for label {spec.label!r}",
                                    f"use one of: {', '.join(have)}")
    with reading(f"the frozen overlay {frozen}", RESTORE):
        rows = named(table, partial(pd.read_csv, comment="#"))
        absent = {"label", "role", "verdict", "feature"} - set(rows.columns)
        if absent:
            raise ValueError(f"{table.name} lacks the column(s) {', '.join(sorted(absent))}")
    rows = rows[(rows["label"] == spec.label) & (rows["role"] == "target")]
    chosen = rows[rows["verdict"].isin(spec.verdicts)]
    if chosen.empty:
        counts = ", ".join(f"{v} {n}" for v, n in rows["verdict"].value_counts().items()) or "none"
        raise ClinicalTransferError(
            f"no {spec.label!r} features with verdict {' / '.join(spec.verdicts)} in {frozen.name} (its verdicts: {counts})",
            "pass --verdicts with the verdicts to test (quoted, comma-separated)")
    return manifest, chosen.reset_index(drop=True)


def _check_groups(groups: list[str], group_map: dict[str, str]) -> dict[str, str]:
    mapping = {g: group_map.get(g, g) for g in groups}
    for a, b in mapping.items():
        if group_kind(a) != group_kind(b):
            raise ClinicalTransferError(
                f"segment group {a!r} cannot be replicated in {b!r}: speech and cough/breath results are never pooled",
                "map speech groups (prompted_speech, vowel) onto speech groups and cough/breath onto cough/breath")
    return mapping


def replicate(cfg: RunConfig, spec: ReplicationSpec, out: Path, progress: bool = True) -> ReplicationResult:
    """Replicate ``spec``'s frozen correlates in the corpus of ``cfg.dataset``; write under ``out``."""
    manifest, original = _read_frozen(spec)
    resolved = manifest.get("resolved_config", {})
    enc, analysis = resolved.get("encoder", {}), resolved.get("analysis", {})
    mapping = _check_groups(sorted(original["segment_group"].unique()), spec.group_map)
    sae = spec.sae or enc.get("sae") or None
    if sae == "fit":
        raise ClinicalTransferError("the frozen overlay used a dictionary fit to its own corpus",
                                    "pass --sae PATH to that fitted checkpoint (its digest is checked)")
    models = resolve_models(enc.get("name", "ge2e"), int(enc.get("layer", 3)), spec.model or enc.get("model") or None,
                            sae, spec.device)
    want = manifest.get("inputs", {})
    for what, have, expected in (("encoder", models.encoder.id(), want.get("encoder_id")),
                                 ("SAE", models.sae_digest, want.get("sae_sha256"))):
        if expected and have != expected:
            raise ClinicalTransferError(
                f"the {what} differs from the frozen overlay's ({have[:12]}... vs {expected[:12]}...): its features "
                "would not be the same features", "pass --model / --sae that reproduce the frozen run's encoder and SAE")
    inv = run_inventory(cfg, out, progress=progress)
    frozen_label = next((lab for lab in analysis.get("labels", []) if lab.get("column") == spec.label), {})
    column = spec.column or spec.label
    if column not in inv.recordings.columns:
        raise ClinicalTransferError(f"the second corpus has no column {column!r}",
                                    f"pass --column with one of: {', '.join(sorted(map(str, inv.recordings.columns)))}")
    positive = spec.positive or (frozen_label.get("positive", []) if column == spec.label else [])
    negative = spec.negative or (frozen_label.get("negative", []) if column == spec.label else [])
    missing_as = frozen_label.get("missing_as", "") if spec.missing_as is None else spec.missing_as
    confounds = [c for c in analysis.get("confounds", []) if c in inv.recordings.columns]
    dropped = [c for c in analysis.get("confounds", []) if c not in inv.recordings.columns]
    private = out.with_name(out.name + "_private")
    scored = score_corpus(inv.recordings, models, private / "scores", out.parent / ".score_cache", cfg.guardrails.salt,
                          inv.adapter.read_sources, progress=progress)
    features = feature_table(ScoreStore(private / "scores"), analysis.get("aggregation", "mean"))
    meta = analysis_meta(inv.recordings, cfg.guardrails.salt, [column, *confounds])
    meta = meta[meta["segment_group"].isin(set(mapping.values()))].reset_index(drop=True)
    if missing_as:
        meta[column] = meta[column].astype(object).where(meta[column].notna(), missing_as)
    alpha = float(analysis.get("alpha", 0.05))
    ocfg = OverlayConfig(confounds=confounds, permutations=0, replication=False, positive_controls=[], seed=cfg.seed,
                         alpha=alpha, min_cell=cfg.guardrails.min_cell, strict=False)
    second = overlay(features, meta, LabelSpec(column, tuple(positive), tuple(negative)), config=ocfg).overlay
    feats, fams = replication_tables(original, second, mapping, alpha, spec.draws, cfg.seed)
    contrast = str(second["contrast"].iloc[0]) if len(second) else ""
    result = ReplicationResult(feats, fams, {}, "")
    result.manifest = {
        "frozen": Path(spec.frozen).name, "frozen_manifest_sha256": sha256_file(Path(spec.frozen) / "MANIFEST.json"),
        "label_original": spec.label, "label_replication": {"column": column, "positive": positive, "negative": negative,
                                                             "missing_as": missing_as, "contrast": contrast},
        "verdicts_tested": list(spec.verdicts), "segment_groups": mapping,
        "identity_verified": {"encoder_id": models.encoder.id(), "sae_sha256": models.sae_digest},
        "confounds": confounds, "confounds_missing_in_second_corpus": dropped, "alpha": alpha,
        "null_draws": spec.draws, "seed": cfg.seed, "scoring": scored.text(), "corpus": _corpus_terms(cfg.dataset.name, False),
        "n_features_tested_in_second_corpus": features.shape[1] - 1,
        "versions": {"clinical_transfer": __version__, "python": platform.python_version(), "numpy": np.__version__,
                     "pandas": pd.__version__},
    }
    result.text = _report(result)
    out.mkdir(parents=True, exist_ok=True)
    guardrails.write_table(feats, out / "replication_features")
    guardrails.write_table(fams, out / "replication_families")
    guardrails.write_json(result.manifest, out / "replication_manifest.json")
    guardrails.write_text(result.text, out / "REPLICATION.md")
    return result


def _fmt(v, spec: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _report(result: ReplicationResult) -> str:
    m = result.manifest
    lines = [
        f"# Replication of {m['label_original']!r} from the frozen overlay {m['frozen']!r}",
        "",
        f"Second corpus: {m['corpus']['name']} ({m['corpus']['licence']}; cite: {m['corpus']['citation']}).",
        f"Label there: {m['label_replication']['column']!r}, contrast {m['label_replication']['contrast']!r}. "
        f"Features tested: those the original run called {' / '.join(m['verdicts_tested'])}.",
        f"Encoder and SAE verified identical to the frozen run's (encoder {m['identity_verified']['encoder_id'][:12]}..., "
        f"SAE {m['identity_verified']['sae_sha256'][:12]}...). Adjusted for: {', '.join(m['confounds']) or 'nothing'}"
        + (f" (not in the second corpus: {', '.join(m['confounds_missing_in_second_corpus'])})"
           if m["confounds_missing_in_second_corpus"] else "") + ".",
        "",
        "**A failure to replicate is a result.** It can mean the original correlate was specific to its corpus "
        "(its recruitment, devices or an unmeasured confound), that the second corpus measures the label "
        "differently, or that it is too small to see the effect; it is reported here with the same care as a success.",
        "",
        "| original group | group here | features | tested | same sign | replicated | rate | null rate (mean / 95th) | p vs null | Spearman rho | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.families.itertuples(index=False):
        lines.append(
            f"| {r.segment_group} | {r.segment_group_replication} | {r.n_features} | {_fmt(r.n_tested, '.0f')} | "
            f"{_fmt(r.n_same_sign, '.0f')} | {_fmt(r.n_replicated, '.0f')} | {_fmt(r.replication_rate)} | "
            f"{_fmt(r.null_rate_mean)} / {_fmt(r.null_rate_95th)} | {_fmt(r.p_vs_null, '.4f')} | {_fmt(r.spearman_rho)} | "
            f"{r.note if isinstance(r.note, str) else ''} |")
    lines += [
        "",
        "Replicated = same sign and one-sided q < alpha (Benjamini–Hochberg within the family's tested set). "
        f"Null: {m['null_draws']} random sets of the same size from the second corpus's family, given the original "
        "directions; p vs null = share of random sets replicating at least as often.",
    ]
    return "\n".join(lines) + "\n"
