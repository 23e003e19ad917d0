"""The main job behind ``run-overlay``: inventory -> scores -> overlays -> report.

This is the one function that orders the stages of an overlay run (see ARCHITECTURE.md). It keeps
per-recording scores out of the output folder (they live in a private sibling folder and the cache),
pseudonymises once, and hands every table to the guardrail writers.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clinical_transfer import guardrails
from clinical_transfer.acoustics import acoustic_components, descriptor_id, egemaps_table
from clinical_transfer.encoders.registry import is_descriptor_set
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import sha256_text
from clinical_transfer.reporting.render import render_markdown
from clinical_transfer.run.config import RunConfig
from clinical_transfer.run.evidence import write_evidence
from clinical_transfer.run.fit_sae import fit_corpus_sae
from clinical_transfer.run.inventory import run_inventory
from clinical_transfer.run.models import resolve_models
from clinical_transfer.run.planted import LABEL as PLANTED_LABEL
from clinical_transfer.run.planted import planted_response
from clinical_transfer.run.ray_engine import score_corpus
from clinical_transfer.run.result import InventorySummary, ModelIdentity, RunResult
from clinical_transfer.run.top_frames import write_top_frames
from clinical_transfer.sae import default as default_sae
from clinical_transfer.scoring import sae_hash
from clinical_transfer.stats import LabelSpec, OverlayConfig, overlay
from clinical_transfer.stats.controls import NUISANCE  # the columns the negative controls read
from clinical_transfer.stats.design import add_age_band
from clinical_transfer.stats.overlay import add_run_q
from clinical_transfer.store import ScoreStore
from dataset_adapters import adapter_entry
from dataset_adapters.demo import DemoConfig

#: Columns the positive controls and split variables may read beside the configured labels/confounds.
_CONTROL_COLUMNS = ["age", "sex", "wave"]


def feature_table(store: ScoreStore, aggregation: str) -> pd.DataFrame:
    """Dense recordings x active-features table of one aggregate (features never active are dropped)."""
    X = store.matrix(aggregation)
    active = np.flatnonzero(np.asarray((X != 0).sum(axis=0)).ravel())
    dense = X[:, active].toarray().astype(np.float32)
    table = pd.DataFrame(dense, columns=[f"feature_{j:05d}" for j in active])
    table.insert(0, "recording_id", store.index["recording_id"].to_numpy())
    return table


def analysis_meta(recordings: pd.DataFrame, salt: str, columns: list[str]) -> pd.DataFrame:
    """Pseudonymised metadata rows for the statistics (in memory only; never written per person)."""
    keep = [c for c in dict.fromkeys(["segment_group", *columns, *NUISANCE]) if c in recordings.columns]
    meta = recordings[recordings["status"] == "ok"][keep].copy()
    meta.insert(0, "participant_id", guardrails.pseudonymise(recordings.loc[meta.index, "participant_id"], salt, "p"))
    meta.insert(0, "recording_id", guardrails.pseudonymise(recordings.loc[meta.index, "recording_id"], salt, "r"))
    for c in meta.columns:
        if str(meta[c].dtype) == "boolean":
            meta[c] = meta[c].astype(object).where(meta[c].notna(), None)
    return meta.reset_index(drop=True)


def _atlas_labels(path: str) -> pd.DataFrame | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise ClinicalTransferError(f"feature label table {p} does not exist", "fix [analysis] feature_labels")
    table = pd.read_csv(p, comment="#", dtype=str)
    if not {"feature", "feature_label"} <= set(table.columns):
        raise ClinicalTransferError(f"{p} needs the columns feature, feature_label (found: {', '.join(table.columns)})",
                                    "write one row per SAE feature id, e.g. feature_00161,breathy phonation")
    return table


def _join_atlas(overlay: pd.DataFrame, atlas: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Join atlas labels by feature id, rewriting disease-like ones per (label, segment group)."""
    parts = []
    for (label, group), rows in overlay.groupby(["label", "segment_group"], sort=False):
        safe = guardrails.audit_feature_labels(atlas, label, dataset, group)
        parts.append(rows.merge(safe, on="feature", how="left"))
    return pd.concat(parts, ignore_index=True)


def join_stability(overlay: pd.DataFrame, stability: np.ndarray) -> pd.DataFrame:
    """``stability`` (seed stability of the feature's decoder direction, [0, 1]) beside each row; feature
    ids are ``feature_NNNNN``, the SAE's feature index."""
    index = overlay["feature"].str.extract(r"(\d+)$")[0].astype(int).to_numpy()
    return overlay.assign(stability=np.round(stability[index], 6))


def input_hashes(recordings: pd.DataFrame, encoder_id: str, sae_digest: str) -> dict:
    """What a run read: every audio file's SHA-256 (in recording order), the encoder and the SAE."""
    ok = recordings.sort_values("recording_id", kind="stable")
    audio = sha256_text("\n".join(f"{s}" for s in ok["audio_sha256"].fillna("missing")))
    labels = sha256_text(recordings.drop(columns=["source"]).to_csv(index=False))
    return {"audio_sha256": audio, "recording_table_sha256": labels, "encoder_id": encoder_id, "sae_sha256": sae_digest}


def _check_columns(cfg: RunConfig, recordings: pd.DataFrame) -> None:
    a = cfg.analysis
    missing = [lab.column for lab in a.labels if lab.column not in recordings.columns]
    missing += [c for c in a.confounds if c not in recordings.columns]
    if missing:
        raise ClinicalTransferError(f"column(s) {', '.join(missing)} are not in the corpus metadata",
                                    "fix [analysis] labels/confounds in the config")


def _corpus_terms(name: str, demo: bool) -> dict:
    """Licence and citation every output of a run carries (the registry's; the demo is generated here)."""
    if demo:
        return {"name": "demo", "licence": "synthetic, generated by clinical-transfer (no person's data)",
                "citation": "clinical-transfer demo corpus (Coswara layout, effects planted on purpose)"}
    entry = adapter_entry(name)
    return {"name": name, "licence": entry.licence, "citation": entry.citation}


def run_overlay(cfg: RunConfig, out: Path, progress: bool = True, corpus_note: str = "public corpus",
                demo: dict | None = None, config_source: str = "", engine: str = "local", ray_options=None) -> RunResult:
    """Run the main job for ``cfg`` into ``out`` and return its :class:`RunResult`.

    Stages, in order (as ``extract``): encoder + SAE (resolved once) -> inventory (written under ``out``) -> scores (cached
    under ``out/../.score_cache``, the store in the private sibling ``out_private``) -> one overlay per
    configured label -> REPORT.md / report.html -> ``run_manifest.json``. ``demo`` is the spec of a
    synthetic corpus (recorded so ``regenerate`` can rebuild it).
    """
    a = cfg.analysis
    if not a.labels:
        raise ClinicalTransferError("the config names no labels to analyse", "add [[analysis.labels]] column = ... entries")
    e = cfg.encoder
    descriptor_run = is_descriptor_set(e.name)  # named per-recording descriptors (eGeMAPS): no states, no SAE
    models, fit = None, False
    if not descriptor_run:
        if not e.sae:  # resolved here and recorded: a real corpus gets a dictionary fit to it, the demo the embedded one
            e.sae = "embedded" if demo is not None else "fit"
        fit = e.sae == "fit"
        # first: a bad SAE fails before any audio is read
        models = resolve_models(e.name, e.layer, e.model, None if fit else e.sae, e.device, need_sae=not fit)
    inv = run_inventory(cfg, out, progress=progress)
    _check_columns(cfg, inv.recordings)
    recordings, fitted, stability = inv.recordings, None, None
    if descriptor_run:
        features = egemaps_table(recordings, cfg.guardrails.salt, out.parent / ".acoustic_cache", progress,
                                 inv.adapter.read_sources)
        encoder_id = descriptor_id()
        identity = ModelIdentity(e.name, 0, encoder_id, "none: 88 named eGeMAPS descriptors per recording")
        sae_digest, scored_text, n_scored = "", f"{len(features)} recordings described", len(features)
    else:
        if fit:
            fitted = fit_corpus_sae(inv.recordings, models.encoder, inv.adapter.read_sources,
                                    out.parent / ".sae_cache", cfg.sae_fit, cfg.seed, progress)
            models = replace(models, sae=fitted.sae, sae_name=fitted.name, sae_digest=sae_hash(fitted.sae))
            # the dictionary split trained the SAE: its people are not analysed (unless fit_on = all)
            recordings = recordings[~recordings["participant_id"].astype(str).isin(fitted.dictionary)]
            stability = fitted.stability
        elif models.sae_name == default_sae.DESCRIPTION:
            stability = default_sae.default_stability()
        private = out.with_name(out.name + "_private")  # per-recording scores never go into the output folder
        scored = score_corpus(recordings, models, private / "scores", out.parent / ".score_cache", cfg.guardrails.salt,
                              inv.adapter.read_sources, engine, ray_options, progress=progress)
        features = feature_table(ScoreStore(private / "scores"), a.aggregation)
        identity = ModelIdentity(models.encoder.name, models.encoder.layer, models.encoder.layer_convention,
                                 models.sae_name)
        encoder_id, sae_digest, scored_text, n_scored = models.encoder.id(), models.sae_digest, scored.text(), scored.scored
    meta = analysis_meta(recordings, cfg.guardrails.salt,
                         [lab.column for lab in a.labels] + a.confounds + _CONTROL_COLUMNS + a.strata)
    meta = meta[meta["segment_group"].isin(a.segment_groups)].reset_index(drop=True)
    for lab in a.labels:
        if lab.missing_as:  # e.g. symptoms: True vs not reported (stated in the report)
            meta[lab.column] = meta[lab.column].astype(object).where(meta[lab.column].notna(), lab.missing_as)
    descriptors = None
    if descriptor_run:
        descriptors = features
    elif a.adjust_acoustic > 0 or (a.evidence and a.evidence_acoustics):
        descriptors = egemaps_table(recordings, cfg.guardrails.salt, out.parent / ".acoustic_cache", progress,
                                    inv.adapter.read_sources)
    variants = [("", list(a.confounds))]
    if a.adjust_acoustic > 0:  # the same overlays again with the top acoustic components as confounds
        pcs = _acoustic_confounds(descriptors, meta, a.adjust_acoustic)
        meta = pd.concat([meta, pcs], axis=1)
        variants.append((f"+acoustic{a.adjust_acoustic}", list(a.confounds) + list(pcs.columns)))
    specs = {lab.column: LabelSpec(lab.column, tuple(lab.positive), tuple(lab.negative)) for lab in a.labels}
    atlas = _atlas_labels(a.feature_labels)
    result = RunResult(
        dataset=cfg.dataset.name, corpus_note=corpus_note, config_source=config_source or "built-in defaults",
        inventory=InventorySummary(int(inv.recordings["participant_id"].nunique()), len(inv.recordings),
                                   inv.excluded()),
        n_scored=n_scored, models=identity,
        aggregation=a.aggregation, confounds=list(a.confounds), strata=list(a.strata),
        min_cell=cfg.guardrails.min_cell, missing_as={lab.column: lab.missing_as for lab in a.labels if lab.missing_as},
        sae_fit=fitted.report if fitted is not None else {}, stability=stability,
        corpus=_corpus_terms(cfg.dataset.name, demo is not None),
    )
    for suffix, confounds in variants:
        for i, lab in enumerate(a.labels):
            ocfg = OverlayConfig(confounds=confounds, strata=list(a.strata), permutations=a.permutations,
                                 min_stratum=a.min_stratum,
                                 seed=cfg.seed, alpha=a.alpha, min_cell=cfg.guardrails.min_cell, strict=False,
                                 positive_controls=["age", "sex"] if i == 0 and not suffix else [])
            res = overlay(features, meta, specs[lab.column], config=ocfg)
            if atlas is not None:
                res.overlay = _join_atlas(res.overlay, atlas, cfg.dataset.name)
            if stability is not None:
                res.overlay = join_stability(res.overlay, stability)
            result.overlays[lab.column + suffix] = res
    if len(result.overlays) > 1:  # q_run over every target family of the run, all labels together
        labels = list(result.overlays)
        for lab_col, table in zip(labels, add_run_q(*(result.overlays[c].overlay for c in labels))):
            result.overlays[lab_col].overlay = table
    for stale in ("overlays", "figures", "evidence", "planted"):  # a reused output folder keeps nothing of an earlier run
        if (out / stale).is_dir():
            shutil.rmtree(out / stale)
    if a.evidence:
        norms = None if descriptor_run else models.sae.W_dec.detach().norm(dim=1).numpy()
        if demo is not None and not descriptor_run and PLANTED_LABEL in specs:  # the plant's features, measured
            result.planted = planted_response(demo_config(demo), models.encoder, models.sae, features, meta, progress)
            guardrails.write_table(result.planted, out / "planted" / PLANTED_LABEL)
        result.evidence = write_evidence(result.overlays, specs, features, add_age_band(meta), descriptors, norms,
                                         out, cfg.guardrails.min_cell, list(a.confounds), result.planted)
        if not descriptor_run and a.top_frames:
            result.top_frames = write_top_frames(result.evidence, features, meta, recordings, cfg.guardrails.salt,
                                                 models.encoder, models.sae, inv.adapter.read_sources, out,
                                                 out.with_name(out.name + "_private"), synthetic=demo is not None)
    result.manifest = {
        "resolved_config": cfg.public_dict(), "config_sha256": cfg.digest(), "config_source": result.config_source,
        "inputs": input_hashes(inv.recordings, encoder_id, sae_digest),
        "demo": demo, "scoring": scored_text, "n_features_tested": features.shape[1] - 1,
        "sae_fit": result.sae_fit, "corpus": result.corpus,
    }
    result.write(out)
    render_markdown(result, out)
    return result


def _acoustic_confounds(descriptors: pd.DataFrame, meta: pd.DataFrame, k: int) -> pd.DataFrame:
    """``acoustic_pc1..k`` for the rows of ``meta``: eGeMAPS components fit per segment group."""
    table = descriptors.set_index("recording_id").loc[meta["recording_id"]].reset_index()
    return acoustic_components(table, meta["segment_group"], k).set_index(meta.index)


def demo_spec(cfg: RunConfig) -> dict:
    """The demo corpus spec and its public salt, as recorded in a demo run's manifest."""
    return {**asdict(cfg.demo), "salt": cfg.guardrails.salt}  # a synthetic corpus: nothing to protect


def demo_config(spec: dict) -> DemoConfig:
    """The :class:`DemoConfig` of a recorded :func:`demo_spec` (its salt set aside)."""
    return DemoConfig(**{k: v for k, v in spec.items() if k != "salt"})
