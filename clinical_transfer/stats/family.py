"""Fitting one family — (label, contrast, segment group) — over every feature at once.

Why a module of its own: the family is the unit of every estimate, multiplicity correction and verdict.
This module fits it (adjusted and unadjusted association, rank effects), asks the robustness checks and
controls for their evidence, and leaves the judging to :mod:`clinical_transfer.stats.verdicts`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests
from threadpoolctl import threadpool_limits

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.stats import robustness as rb
from clinical_transfer.stats.association import Association, associate_designs
from clinical_transfer.stats.controls import confirm, nuisance_associations
from clinical_transfer.stats.design import Family, confound_columns
from clinical_transfer.stats.diagnostics import DesignDiagnostics, coarsen_confounds, diagnose
from clinical_transfer.stats.options import OverlayConfig
from clinical_transfer.stats.participant import ParticipantEffects, participant_effects
from clinical_transfer.stats.permutation import freedman_lane
from clinical_transfer.stats.verdicts import FamilyChecks, verdicts
from clinical_transfer.taxonomy import DEFAULT_STRATA

NUMERIC_COLUMNS = (
    "n_participants_pos", "n_participants_neg", "n_participants", "n_recordings", "beta_raw", "se_raw",
    "p_raw", "q_raw", "beta_adj", "se_adj", "t_adj", "p_adj", "q_adj", "q_adj_by", "attenuation", "partial_r",
    "cohen_d_adj", "auroc", "auroc_low", "auroc_high", "cliffs_delta", "n_strata", "n_strata_same_sign",
    "heterogeneity_q", "heterogeneity_p", "n_strata_reversed", "beta_matched", "p_matched", "q_matched",
    "n_participants_matched", "confirm_mixedlm_beta", "confirm_mixedlm_p", "confirm_logit_coef", "confirm_logit_p",
    # statistics II (added beside the columns above, whose names are kept)
    "q_run", "auroc_adj", "auroc_adj_low", "auroc_adj_high", "n_split_variables", "matched_agreement", "p_fwe",
    "beta_change", "se_change", "p_change", "q_change", "beta_discovery", "p_discovery", "beta_replication",
    "p_replication", "n_strata_significant",
)
COLUMNS = ("label", "contrast", "segment_group", "feature", "role", *NUMERIC_COLUMNS, "exceeds_maxt",
           "replicated", "nuisance_flag", "verdict", "note")
_BOOLEAN = ("exceeds_maxt", "replicated")


def bh(p: np.ndarray, method: str) -> np.ndarray:
    q = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method=method)[1]
    return q


def suppressed_rows(label: str, contrast: str, group: str, names: list[str], role: str, note: str,
                    verdict: str = "suppressed") -> pd.DataFrame:
    """Rows of a family that shows no numbers (suppressed, or not estimable), with the reason in ``note``."""
    df = pd.DataFrame({"label": label, "contrast": contrast, "segment_group": group, "feature": names, "role": role})
    for c in NUMERIC_COLUMNS:
        df[c] = np.nan
    for c in _BOOLEAN:
        df[c] = pd.array([pd.NA] * len(names), dtype="boolean")
    df["nuisance_flag"] = ""
    df["verdict"] = verdict
    df["note"] = note
    return df[list(COLUMNS)]


@dataclass(frozen=True)
class CoreStatistics:
    adj: Association
    raw: Association
    participant: ParticipantEffects | None
    """Participant-level AUROC / adjusted AUROC / Cohen's d (binary labels only)."""


def core_statistics(x: np.ndarray, F: np.ndarray, C: np.ndarray | None, clusters: np.ndarray | None,
                    binary: bool, alpha: float = 0.05, workers: int | None = None) -> CoreStatistics:
    """Adjusted and unadjusted association plus (binary labels) participant-level effect sizes.

    Each is column-chunked and GIL-free (compiled passes, numpy's sort, single-threaded BLAS) and runs
    its chunks on ``workers`` threads (default: the cores, at most 4), one after the other: measured
    ~10% faster than running the two side by side, which share the caches. BLAS is held to one thread:
    the threads are the parallelism, and BLAS's own spinning threads would fight them for the cores.
    Without clusters every recording is its own participant.
    """
    workers = workers or min(os.cpu_count() or 1, 4)
    with threadpool_limits(1, user_api="blas"):
        adj, raw = associate_designs(x, F, [C, None], clusters, workers=workers)
        units = clusters if clusters is not None else np.arange(len(x))
        part = participant_effects(x, F, C, units, alpha, workers=workers) if binary else None
    return CoreStatistics(adj, raw, part)


def _fit_design(fam: Family, cfg: OverlayConfig) -> tuple[Family, np.ndarray, DesignDiagnostics]:
    """Coarsen the family's rare confound levels, build its design and diagnose it."""
    meta, coarsened = coarsen_confounds(fam.meta, fam.confounds, cfg.min_cell)
    fam = replace(fam, meta=meta)
    C, _ = confound_columns(fam.meta, fam.confounds)
    diag = diagnose(fam.x, C, fam.participants if cfg.cluster_col else np.arange(len(fam.x)),
                    cfg.min_resid_df, cfg.max_zero_fraction, coarsened)
    return fam, C, diag


def family_table(fam: Family, F: np.ndarray, names: list[str], cfg: OverlayConfig, role: str,
                  full: bool) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Fit one family; returns (overlay rows, split rows, control records)."""
    n_pos = fam.n_participants(1.0) if fam.binary else None
    n_neg = fam.n_participants(0.0) if fam.binary else None
    n_all = fam.n_participants()
    smallest = min(n_pos, n_neg) if fam.binary else n_all
    if smallest < cfg.min_cell and cfg.strict and role == "target":
        sizes = f"{n_pos} positive / {n_neg} negative" if fam.binary else f"{n_all}"
        raise ClinicalTransferError(
            f"{cfg.group_col or 'group'} {fam.segment_group!r} has too few participants for label {fam.label!r} "
            f"({sizes}; fewer than min_cell={cfg.min_cell})",
            f"drop group {fam.segment_group!r} from the metadata, or pass --allow-small-groups to report it as suppressed",
        )
    if smallest < cfg.min_cell:
        note = f"suppressed (n<{cfg.min_cell}): fewer than {cfg.min_cell} participants on a side of the contrast"
        return suppressed_rows(fam.label, fam.contrast, fam.segment_group, names, role, note), pd.DataFrame(), []
    cluster = cfg.cluster_col is not None
    fam, C, diag = _fit_design(fam, cfg)
    design = {"kind": "design", **family_key(fam), "role": role, **diag.record()}
    if not diag.estimable:
        t = suppressed_rows(fam.label, fam.contrast, fam.segment_group, names, role,
                            f"not estimable: {diag.reason} ({diag.text()})", verdict="not estimable")
        return t, pd.DataFrame(), [design]
    clusters = fam.participants if cluster else None
    core = core_statistics(fam.x, F, C, clusters, fam.binary, cfg.alpha)
    adj, raw = core.adj, core.raw
    df = pd.DataFrame({"label": fam.label, "contrast": fam.contrast, "segment_group": fam.segment_group,
                       "feature": names, "role": role})
    df["n_participants_pos"], df["n_participants_neg"] = n_pos, n_neg
    df["n_participants"], df["n_recordings"] = n_all, len(fam.x)
    df["beta_raw"], df["se_raw"], df["p_raw"] = raw.beta, raw.se, raw.p
    df["q_raw"] = bh(raw.p, "fdr_bh")
    df["beta_adj"], df["se_adj"], df["t_adj"], df["p_adj"] = adj.beta, adj.se, adj.t, adj.p
    df["q_adj"], df["q_adj_by"] = bh(adj.p, "fdr_bh"), bh(adj.p, "fdr_by")
    with np.errstate(divide="ignore", invalid="ignore"):
        df["attenuation"] = 1.0 - adj.beta / raw.beta
    df["partial_r"] = adj.partial_r
    df = df.assign(**{c: np.nan for c in NUMERIC_COLUMNS if c not in df.columns})
    if core.participant is not None:
        pe = core.participant
        df["cohen_d_adj"] = pe.cohen_d_adj
        df["auroc"], df["auroc_low"], df["auroc_high"] = pe.auroc.auroc, pe.auroc.low, pe.auroc.high
        df["cliffs_delta"] = pe.auroc.cliffs_delta
        df["auroc_adj"], df["auroc_adj_low"], df["auroc_adj_high"] = pe.auroc_adj.auroc, pe.auroc_adj.low, pe.auroc_adj.high
    checks = FamilyChecks()
    q_adj = df["q_adj"].to_numpy()
    sig = np.flatnonzero(q_adj < cfg.alpha)
    split_on = cfg.strata if cfg.strata is not None else list(DEFAULT_STRATA)
    split_on = [s for s in split_on if s in fam.meta.columns and s != fam.label]
    splits = pd.DataFrame()
    stab = pd.DataFrame(columns=["n_strata", "n_strata_same_sign", "heterogeneity_q", "heterogeneity_p",
                                 "n_strata_reversed", "n_split_variables", "n_strata_significant"])
    if not split_on:
        checks.splits = "no split variable in the metadata"
    if len(sig) and split_on:
        sig_names = [names[i] for i in sig]
        splits = rb.split_estimates(fam, F[:, sig], sig_names, split_on, cfg.min_stratum, cluster)
        stab = rb.stability(splits, df.set_index("feature")["beta_adj"], cfg.alpha)
        totals = {"n_participants": n_all} | ({"n_participants_pos": n_pos, "n_participants_neg": n_neg}
                                              if fam.binary else {})
        splits = rb.suppress_complements(splits, totals, cfg.min_cell)
        if splits.empty:
            checks.splits = (f"no stratum of {', '.join(split_on)} has {cfg.min_stratum} participants a side "
                             "(min_stratum)")
    df = df.drop(columns=[c for c in stab.columns if c in df.columns]).join(stab, on="feature")
    for c in ("n_strata", "n_strata_same_sign", "n_strata_reversed", "n_split_variables", "n_strata_significant"):
        df[c] = df[c].astype("Float64")
    controls: list[dict] = [design]
    for c in _BOOLEAN:
        df[c] = pd.array([pd.NA] * len(df), dtype="boolean")
    df["nuisance_flag"] = ""
    if full:
        match_on = cfg.match_on if cfg.match_on is not None else _default_match_on(fam)
        matched, checks.matched = rb.matched_estimates(fam, F, match_on, cfg.seed, cfg.match_draws, cfg.min_cell,
                                                        adj.beta, adj.se, cluster)
        for k, v in matched.items():
            df[k] = v
        if cfg.permutations > 0:
            fl = freedman_lane(fam.x, F, C, clusters, adj.beta, adj.se, adj.df_t, cfg.permutations, cfg.seed,
                               cfg.alpha)
            df["p_fwe"] = fl["p_fwe"]
            df["exceeds_maxt"] = pd.array(np.abs(fl["t_std"]) > fl["summary"]["maxt_threshold_95"], dtype="boolean")
            controls.append({"kind": "permutation_null", **family_key(fam), "role": role, **fl["summary"]})
        else:
            checks.permutation = "permutations = 0"
        if cfg.replication:
            rep, why = rb.replication_split(fam, F, cfg.seed, cfg.alpha, cfg.min_cell, cluster)
            record = {"kind": "replication", **family_key(fam), "role": role, "reason": why}
            if rep is not None:
                for c in rep.columns:
                    df[c] = rep[c].to_numpy() if c != "replicated" else rep[c].array
                found = rep["replicated"].notna()
                record |= {"n_discovered": int(found.sum()), "n_replicated": int(rep["replicated"].sum()),
                           "replication_rate": float(rep["replicated"][found].mean()) if found.any() else np.nan}
            controls.append(record)
        cand = np.flatnonzero((df["q_raw"].to_numpy() < cfg.alpha) & ~(q_adj < cfg.alpha))
        if len(cand):
            change, se, p = rb.change_test(fam.x, F[:, cand], C, clusters)
            df.loc[cand, "beta_change"], df.loc[cand, "se_change"], df.loc[cand, "p_change"] = change, se, p
            df.loc[cand, "q_change"] = bh(p, "fdr_bh")
        if len(sig):
            nuis = nuisance_associations(fam, F[:, sig], [names[i] for i in sig], cfg.nuisance, cluster)
            if not nuis.empty:
                nuis["q"] = bh(nuis["p"].to_numpy(), "fdr_bh")
                r_label = df.set_index("feature")["partial_r"].abs()
                hit = nuis[(nuis["q"] < cfg.alpha) & (nuis["r"].abs() >= nuis["feature"].map(r_label))]
                flags = hit.groupby("feature")["nuisance"].agg(",".join).to_dict()
                df["nuisance_flag"] = [flags.get(f, "") for f in df["feature"]]
                for rec in nuis.to_dict("records"):
                    controls.append({"kind": "negative_control", **family_key(fam), **rec})
            top = df.iloc[sig].nsmallest(cfg.confirm_top, "p_adj").index
            for i in top:
                for k, v in confirm(fam, F[:, names.index(df.at[i, "feature"])], C).items():
                    df.at[i, k] = v
    else:
        checks = FamilyChecks("not run for positive controls", "not run for positive controls")
    df["verdict"], df["note"] = verdicts(df, cfg.alpha, checks)
    if diag.coarsened:
        merged = f"coarsened {'; '.join(f'{k}: {v}' for k, v in diag.coarsened.items())}"
        df["note"] = [f"{n}; {merged}" if n else merged for n in df["note"]]
    if not splits.empty:
        splits.insert(0, "segment_group", fam.segment_group)
        splits.insert(0, "contrast", fam.contrast)
        splits.insert(0, "label", fam.label)
    return df[list(COLUMNS)], splits, controls


def family_key(fam: Family) -> dict:
    return {"label": fam.label, "contrast": fam.contrast, "segment_group": fam.segment_group}


def _categorical_confounds(fam: Family) -> list[str]:
    return [c for c in fam.confounds if not pd.api.types.is_numeric_dtype(fam.meta[c])
            or pd.api.types.is_bool_dtype(fam.meta[c])]


def _default_match_on(fam: Family) -> list[str]:
    cats = _categorical_confounds(fam)
    if "age" in fam.confounds and "age_band" in fam.meta.columns:
        cats.append("age_band")
    return cats
