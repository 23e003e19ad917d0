"""The main job behind ``run-overlay``: inventory -> scores -> overlays -> report.

Why a module apart from the CLI: the CLI only parses; this orders the stages, keeps per-recording
scores out of the output folder (they live in a private sibling folder and the cache), and hands every
table to the guardrail writers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinical_transfer import guardrails
from clinical_transfer.config import RunConfig
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.inventory_stage import run_inventory
from clinical_transfer.stats.controls import NUISANCE  # the columns the negative controls read


def _encoder_and_sae(cfg: RunConfig):
    import torch

    from clinical_transfer.default_sae import load_default_sae
    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.sae.formats import load_sae

    e = cfg.encoder
    device = "cuda" if e.device == "auto" and torch.cuda.is_available() else ("cpu" if e.device == "auto" else e.device)
    encoder = get_encoder(e.name, model=e.model or None, layer=e.layer, device=device)
    if e.sae:
        return encoder, load_sae(e.sae, d_in_expected=encoder.width), e.sae
    if e.name == "ge2e" and e.layer == 3:
        return encoder, load_default_sae(), "embedded default SAE (demo artifact)"
    raise ClinicalTransferError("no SAE configured for this encoder/layer", "set [encoder] sae = PATH in the config")


def feature_table(store, aggregation: str) -> pd.DataFrame:
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


def input_hashes(recordings: pd.DataFrame, encoder, sae_hash: str) -> dict:
    """What a run read: every audio file's SHA-256 (in recording order), the encoder and the SAE."""
    import hashlib

    ok = recordings.sort_values("recording_id", kind="stable")
    audio = hashlib.sha256("\n".join(f"{s}" for s in ok["audio_sha256"].fillna("missing")).encode()).hexdigest()
    labels = hashlib.sha256(recordings.drop(columns=["source"]).to_csv(index=False).encode()).hexdigest()
    return {"audio_sha256": audio, "recording_table_sha256": labels, "encoder_id": encoder.id(), "sae_sha256": sae_hash}


def run_overlay(cfg: RunConfig, out: Path, progress: bool = True, corpus_note: str = "public corpus",
                demo: dict | None = None) -> dict:
    from clinical_transfer.reporting.render import render_markdown
    from clinical_transfer.scoring import score_recordings
    from clinical_transfer.stats import LabelSpec, OverlayConfig, overlay
    from clinical_transfer.store import ScoreStore

    a = cfg.analysis
    if not a.labels:
        raise ClinicalTransferError("the config names no labels to analyse", "add [[analysis.labels]] column = ... entries")
    inv = run_inventory(cfg, out, progress=progress)
    missing = [l.column for l in a.labels if l.column not in inv.recordings.columns]
    missing += [c for c in a.confounds if c not in inv.recordings.columns]
    if missing:
        raise ClinicalTransferError(f"column(s) {', '.join(missing)} are not in the corpus metadata",
                                    "fix [analysis] labels/confounds in the config")
    encoder, sae, sae_name = _encoder_and_sae(cfg)
    private = out.with_name(out.name + "_private")  # per-recording scores never go into the output folder
    summary = score_recordings(inv.recordings, encoder, sae, private / "scores", out.parent / ".score_cache",
                               cfg.guardrails.salt, progress=progress)
    store = ScoreStore(private / "scores")
    features = feature_table(store, a.aggregation)
    meta = analysis_meta(inv.recordings, cfg.guardrails.salt,
                         [l.column for l in a.labels] + a.confounds + ["age", "sex", "wave", "english_proficiency"])
    meta = meta[meta["segment_group"].isin(a.segment_groups)].reset_index(drop=True)
    atlas = _atlas_labels(a.feature_labels)
    overlays, nulls, pcs, splits = {}, {}, [], {}
    for lab in a.labels:
        if lab.missing_as:  # e.g. symptoms: True vs not reported (stated in the report)
            meta[lab.column] = meta[lab.column].astype(object).where(meta[lab.column].notna(), lab.missing_as)
    for i, lab in enumerate(a.labels):
        ocfg = OverlayConfig(confounds=list(a.confounds), strata=list(a.strata), permutations=a.permutations,
                             seed=cfg.seed, alpha=a.alpha, min_cell=cfg.guardrails.min_cell, strict=False,
                             positive_controls=["age", "sex"] if i == 0 else [])
        res = overlay(features, meta, LabelSpec(lab.column, tuple(lab.positive), tuple(lab.negative)), config=ocfg)
        if atlas is not None:
            res.overlay = _join_atlas(res.overlay, atlas, cfg.dataset.name)
        res.write(out / "overlays" / lab.column)
        overlays[lab.column] = res.overlay
        splits[lab.column] = res.splits
        ctl = res.controls
        if "kind" in ctl:
            null = ctl[ctl["kind"] == "permutation_null"]
            nulls[lab.column] = null[[c for c in ("segment_group", "null_discovery_rate", "null_any_discovery_rate",
                                                  "maxt_threshold_95") if c in null.columns]]
            pc = ctl[ctl["kind"] == "positive_control"]
            if len(pc):
                pcs.append(pc[["label", "segment_group", "n_significant", "max_abs_t"]])
    excluded = inv.recordings[inv.recordings["status"] != "ok"].groupby(
        ["segment_group", "status", "status_reason"]).size().rename("n_recordings").reset_index()
    run = {
        "dataset": cfg.dataset.name, "corpus_note": corpus_note,
        "inventory": {"n_participants": int(inv.recordings["participant_id"].nunique()),
                      "n_recordings": len(inv.recordings), "excluded": excluded},
        "scoring": {"scored": summary.scored}, "encoder": encoder.name, "layer": encoder.layer,
        "layer_convention": encoder.layer_convention, "sae": sae_name, "aggregation": a.aggregation,
        "confounds": a.confounds, "strata": a.strata, "overlays": overlays, "nulls": nulls, "splits": splits,
        "positive_controls": pd.concat(pcs, ignore_index=True) if pcs else pd.DataFrame(),
        "min_cell": cfg.guardrails.min_cell,
        "missing_as": {l.column: l.missing_as for l in a.labels if l.missing_as},
    }
    render_markdown(run, out)
    from clinical_transfer.scoring import sae_hash

    guardrails.write_json({"resolved_config": cfg.public_dict(), "config_sha256": cfg.digest(),
                           "inputs": input_hashes(inv.recordings, encoder, sae_hash(sae)), "demo": demo,
                           "scoring": summary.text(), "n_features_tested": features.shape[1] - 1},
                          out / "run_manifest.json")
    return run
