"""Evidence packets: what a reported feature responds to, at group level, one JSON per feature.

Why: a feature index with a q-value tells a reader nothing about what the model heard. For each robust
correlate and the top features of every family, a packet gathers what can be said without exposing a
person: where the feature is active (density per segment group), how its participant-level activation
splits by label x sex x age band (cells below ``min_cell`` suppressed), which interpretable eGeMAPS
descriptors it tracks (participant-level partial Spearman given the overlay's confounds, top 5 with
Fisher-z CIs, the plain Spearman beside it), how it moves with the
nuisance variables, its decoder norm and seed stability, and the atlas label (audited wording). No audio,
no spectrogram and no per-person value is written; packets go through the guardrails' writer.

Why partial: a feature's raw variation across people is dominated by what the overlay adjusts away (sex
sets F0 and formants, age, recording wave). Ranked by plain Spearman, the demo's planted voice-quality
features were described by F0 slopes, loudness range and spectral balance — what they share with sex. The
question a reader asks of a correlate is what it tracks *beyond* the confounds it was adjusted for, so
descriptors are ranked by the partial Spearman: ranks at participant level, residualised on the
participant-mean confounds (the design of the adjusted AUROC), then correlated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clinical_transfer import guardrails
from clinical_transfer.acoustics import descriptor_group
from clinical_transfer.stats.association import confound_basis
from clinical_transfer.stats.design import LabelSpec, code_label, confound_columns
from clinical_transfer.stats.verdicts import NO_NUMBERS

NUISANCE = ("duration_s", "rms_dbfs", "silence_fraction")
TOP_K = 5
TIE_ALPHA = 0.05
"""A descriptor whose |partial rho| differs from the top one's with p >= this is tied with it."""
_ROW_KEYS = ("verdict", "note", "beta_adj", "q_adj", "q_run", "p_fwe", "auroc", "auroc_low", "auroc_high",
             "auroc_adj", "matched_agreement", "replicated", "stability", "feature_label")


def _clean(v):
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else round(float(v), 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if v is pd.NA:
        return None
    return v


def _spearman_ci(rho: float, n: int, n_controls: int = 0) -> tuple[float, float]:
    """95% CI of a (partial) Spearman correlation by Fisher's z with the Fieller et al. (1957) SE
    1.06 / sqrt(n - 3 - controls)."""
    if n - 3 - n_controls <= 0 or not np.isfinite(rho):
        return np.nan, np.nan
    z, se = np.arctanh(np.clip(rho, -0.999999, 0.999999)), 1.06 / np.sqrt(n - 3 - n_controls)
    return float(np.tanh(z - 1.96 * se)), float(np.tanh(z + 1.96 * se))


def descriptor_associations(v: np.ndarray, descriptors: pd.DataFrame, controls: np.ndarray | None,
                            min_n: int) -> list[dict]:
    """Participant-level association of a feature (``v``, one mean per participant) with every descriptor
    column: plain Spearman and partial Spearman given ``controls`` (participant-mean confounds, no
    constant), ranked by |partial|. Descriptors with fewer than ``min_n`` finite participants are skipped.

    Descriptors complete on the same participants share one rank-and-residualise pass (a packet reads 88
    of them; one call per descriptor cost ~0.3 s a packet)."""
    C = np.zeros((len(v), 0)) if controls is None else controls
    base = np.isfinite(v) & np.isfinite(C).all(axis=1)
    X = descriptors.to_numpy(dtype=float)
    finite = np.isfinite(X)
    rows, passes = [], []
    full = (finite | ~base[:, None]).all(axis=0)  # columns whose missing values are all outside ``base``
    groups = [(np.flatnonzero(full), base)] + [([j], base & finite[:, j]) for j in np.flatnonzero(~full)]
    for cols, ok in groups:
        n = int(ok.sum())
        if not len(cols) or n < min_n or np.std(v[ok]) == 0:
            continue
        Xs = X[np.ix_(ok, cols)]
        sd = Xs.std(axis=0)
        Q = confound_basis(C[ok], n)
        q = Q.shape[1] - 1
        rv = stats.rankdata(v[ok])
        R = stats.rankdata(Xs, axis=0)
        rho = _column_corr(rv, R)
        R_res = R - Q @ (Q.T @ R)
        partial = _column_corr(rv - Q @ (Q.T @ rv), R_res) if n - 3 - q > 0 else np.full(len(cols), np.nan)
        passes.append((R_res, n - q))
        for k, j in enumerate(cols):
            if sd[k] == 0:
                continue
            name = descriptors.columns[j]
            lo, hi = _spearman_ci(partial[k], n, q)
            rows.append({"descriptor": name.removeprefix("egemaps_"), "group": descriptor_group(name),
                         "partial_spearman_rho": _clean(partial[k]), "ci_low": _clean(lo), "ci_high": _clean(hi),
                         "spearman_rho": _clean(rho[k]), "n_controls": q, "n_participants": n,
                         "_pass": len(passes) - 1, "_col": k})
    rows.sort(key=lambda r: (-abs(r["partial_spearman_rho"] or 0), r["descriptor"]))
    _mark_ties(rows, passes)
    return rows


def williams_p(r12: np.ndarray, r13: np.ndarray, r23: np.ndarray, n: np.ndarray | float,
               spearman: bool = False) -> np.ndarray:
    """Two-sided p of H0: rho12 == rho13 for two correlations sharing variable 1 (Williams' t as
    recommended by Steiger 1980, eq. 7; df = n - 3), vectorised.

    ``spearman``: the correlations are of ranks; t is divided by 1.06, the Fieller, Hartley & Pearson
    (1957) factor the packets' CIs use. Why: simulated on ranks of normal data (n 40-160), the plain t
    rejected a true tie 5.1-7.8% of the time (most at rho 0.8, descriptors 0.9 apart); divided, 3.7-6.3%."""
    r12, r13, r23 = (np.asarray(a, dtype=float) for a in (r12, r13, r23))
    det = np.clip(1 - r12**2 - r13**2 - r23**2 + 2 * r12 * r13 * r23, 0.0, None)
    rbar = (r12 + r13) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (r12 - r13) * np.sqrt((n - 1) * (1 + r23) / (2 * (n - 1) / (n - 3) * det + rbar**2 * (1 - r23) ** 3))
        t = t / 1.06 if spearman else t
    return np.where(np.isfinite(t), 2 * stats.t.sf(np.abs(t), np.asarray(n, dtype=float) - 3), np.where(r12 == r13, 1.0, 0.0))


def _mark_ties(rows: list[dict], passes: list[tuple[np.ndarray, int]]) -> None:
    """Which descriptors are statistically indistinguishable from the top one (``tied_with_top``).

    Why: eGeMAPS descriptors are strongly inter-correlated, and a large effect (the demo's voice-quality
    plant separates its positives on dozens of descriptors at |rho| ~0.9) moves many of them together,
    so the order of the top few by point estimate is often noise (0.70 vs 0.68). Each descriptor's
    |partial rho| is compared with the top one's by Williams' t for dependent correlations (the two share
    the feature; their own correlation is that of the residualised ranks; the rank factor 1.06 of
    :func:`williams_p`), df = n - 3 - controls; p >= 0.05
    is a tie. Descriptors from another complete-case pass (other missing values) are not compared (None).
    """
    if not rows or rows[0]["partial_spearman_rho"] is None:
        for r in rows:
            del r["_pass"], r["_col"]
            r["p_vs_top"] = r["tied_with_top"] = None
        return
    top = rows[0]
    top_pass = top["_pass"]
    R_res, n_eff = passes[top_pass]
    b = R_res[:, top["_col"]]
    r12 = abs(top["partial_spearman_rho"])
    for r in rows:
        same, col = r.pop("_pass") == top_pass, r.pop("_col")
        if not same or r["partial_spearman_rho"] is None:
            r["p_vs_top"] = r["tied_with_top"] = None
            continue
        r23 = float(_column_corr(b, R_res[:, [col]])[0]) * np.sign(top["partial_spearman_rho"]) * np.sign(r["partial_spearman_rho"])
        p = float(williams_p(r12, abs(r["partial_spearman_rho"]), r23, n_eff, spearman=True)) if r is not top else 1.0
        r["p_vs_top"], r["tied_with_top"] = _clean(p), bool(p >= TIE_ALPHA)


def _column_corr(a: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of vector ``a`` with every column of ``B``."""
    a = a - a.mean()
    B = B - B.mean(axis=0)
    den = np.sqrt((a @ a) * np.einsum("ij,ij->j", B, B))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a @ B) / den, np.nan)


def select_features(target: pd.DataFrame, top_k: int = TOP_K, planted: pd.DataFrame | None = None) -> pd.DataFrame:
    """Robust correlates plus the top-k adjusted associations of each family (by p_adj), plus the planted
    features of a synthetic corpus (``planted``: the probe's rows with ``planted`` true), whatever their verdict."""
    live = target[~target["verdict"].isin(NO_NUMBERS) & target["p_adj"].notna()]
    robust = live[live["verdict"] == "robust correlate"]
    top = live.sort_values("p_adj", kind="stable").groupby("segment_group", sort=False).head(top_k)
    parts = [robust, top]
    if planted is not None:
        keys = planted.loc[planted["planted"], ["segment_group", "feature"]]
        parts.append(target.merge(keys, on=["segment_group", "feature"]))
    return pd.concat(parts).drop_duplicates(["segment_group", "feature"])


def packet(row: pd.Series, spec: LabelSpec, features: pd.DataFrame, meta: pd.DataFrame,
           descriptors: pd.DataFrame | None, decoder_norms: np.ndarray | None, min_cell: int,
           confounds: list[str] = ()) -> dict:
    """One feature's evidence packet (group-level only). ``features`` and ``descriptors`` are indexed by
    ``recording_id`` (once, by the caller: every packet reads them); ``confounds`` are the overlay's
    (the descriptor association is partial on them)."""
    f = row["feature"]
    group = row["segment_group"]
    values = features[f]
    density = {g: round(float((values.reindex(rows["recording_id"]) != 0).mean()), 6)
               for g, rows in meta.groupby("segment_group", sort=True)}
    fam = meta[meta["segment_group"] == group].reset_index(drop=True)
    coded = code_label(fam, spec)
    fam = fam.assign(_x=coded.x, _v=values.reindex(fam["recording_id"]).to_numpy())
    fam = fam[np.isfinite(fam["_x"])]
    pids = fam["participant_id"].to_numpy()
    people = fam.groupby("participant_id", sort=True).agg(
        x=("_x", "first"), v=("_v", "mean"), **{c: (c, "first") for c in ("sex", "age_band") if c in fam.columns})
    side = {1.0: "positive", 0.0: "negative"} if coded.binary else None
    cells = []
    by = [c for c in ("sex", "age_band") if c in people.columns]
    if side is not None:
        for key, g in people.groupby(["x", *by], sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            n = len(g)
            cell = {"label_side": side.get(key[0], str(key[0])), **{b: _clean(k) for b, k in zip(by, key[1:])}}
            if n < min_cell:
                cells.append({**cell, "n_participants": None, "mean_activation": None, "suppressed": True,
                              "note": f"suppressed (n<{min_cell})"})
            else:
                cells.append({**cell, "n_participants": n, "mean_activation": _clean(g["v"].mean()), "suppressed": False})
    out = {"feature": f, "label": row["label"], "contrast": row["contrast"], "segment_group": group,
           **{k: _clean(row[k]) for k in _ROW_KEYS if k in row.index},
           "activation_density_by_segment_group": density, "participant_activation_cells": cells}
    if descriptors is not None:
        dp = descriptors.reindex(fam["recording_id"]).reset_index(drop=True).groupby(pids, sort=True).mean()
        v = people["v"].reindex(dp.index).to_numpy()
        present = [c for c in confounds if c in fam.columns]
        controls = None
        if present:  # participant means of the coded confounds; a participant missing one gets NaN (skipped)
            complete = fam[present].notna().all(axis=1).to_numpy()
            C = np.full((len(fam), 0), np.nan)
            if complete.any():
                Cc, _ = confound_columns(fam[complete].reset_index(drop=True), present)
                C = np.full((len(fam), Cc.shape[1]), np.nan)
                C[complete] = Cc
            controls = pd.DataFrame(C).groupby(pids, sort=True).mean().reindex(dp.index).to_numpy()
        rows = descriptor_associations(v, dp, controls, max(min_cell, 4))
        out["acoustic_descriptors_top5"] = rows[:TOP_K]
        out["acoustic_descriptors_controls"] = present
        out["acoustic_groups"] = strongest_by_group(rows)
        out["acoustic_leading_groups"] = leading_groups(rows)
    else:
        out["acoustic_descriptors_top5"] = "not computed (eGeMAPS descriptors were not extracted in this run)"
    nuis = {}
    for c in NUISANCE:
        if c in fam.columns:
            per = pd.to_numeric(fam[c], errors="coerce").groupby(pids, sort=True).mean().reindex(people.index)
            ok = per.notna().to_numpy() & np.isfinite(people["v"].to_numpy())
            if ok.sum() >= 4 and per[ok].std() > 0 and people["v"][ok].std() > 0:
                nuis[c] = _clean(stats.spearmanr(people["v"][ok], per[ok]).statistic)
    out["nuisance_spearman"] = nuis
    if decoder_norms is not None:
        out["decoder_norm"] = _clean(decoder_norms[int(f.rsplit("_", 1)[1])])
    return out


def strongest_by_group(rows: list[dict]) -> list[dict]:
    """The strongest descriptor of each eGeMAPS parameter group (rows ranked by |partial rho|), so a reader
    sees at once whether voice quality, pitch, formants, spectral balance or loudness carries the feature."""
    seen, out = set(), []
    for r in rows:
        if r["group"] not in seen:
            seen.add(r["group"])
            out.append({k: r[k] for k in ("group", "descriptor", "partial_spearman_rho", "ci_low", "ci_high")})
    return out


def leading_groups(rows: list[dict]) -> list[str]:
    """The eGeMAPS groups with a descriptor tied with the top one (in order of their best |partial rho|):
    what a reader can say the feature tracks, when the top few descriptors cannot be told apart."""
    return list(dict.fromkeys(r["group"] for r in rows if r.get("tied_with_top")))


def _top_text(top) -> str:
    if not isinstance(top, list) or not top or top[0]["partial_spearman_rho"] is None:
        return "—"
    return f"{top[0]['descriptor']} ({top[0]['partial_spearman_rho']:.2f})"


def write_evidence(overlays: dict, specs: dict[str, LabelSpec], features: pd.DataFrame, meta: pd.DataFrame,
                   descriptors: pd.DataFrame | None, decoder_norms: np.ndarray | None, out: Path,
                   min_cell: int, confounds: list[str] = (), planted: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Write ``evidence/<label>/<group>/<feature>.json`` for every label; returns what was written per label
    (segment group, feature, verdict, top descriptor, groups tied at the top) for the report. ``planted`` is
    the demo's planted-truth probe (:mod:`clinical_transfer.run.planted`): its planted features get packets
    too, and every packet of its label carries its ``planted_z``."""
    index = {}
    features = features.set_index("recording_id")
    descriptors = None if descriptors is None else descriptors.set_index("recording_id")
    for label, spec in specs.items():
        table = overlays[label].overlay
        target = table[table["role"] == "target"]
        probe = None if planted is None else planted[planted["label"] == label]
        probe = probe if probe is not None and len(probe) else None
        z = {} if probe is None else probe.set_index(["segment_group", "feature"])["planted_z"].to_dict()
        chosen = select_features(target, planted=probe)
        rows = []
        for _, row in chosen.iterrows():
            p = packet(row, spec, features, meta, descriptors, decoder_norms, min_cell, list(confounds))
            key = (row["segment_group"], row["feature"])
            if probe is not None:
                p["planted_z"] = _clean(z.get(key, np.nan))
            guardrails.write_json(p, out / "evidence" / label / row["segment_group"] / f"{row['feature']}.json")
            top = p["acoustic_descriptors_top5"]
            rows.append({"segment_group": row["segment_group"], "feature": row["feature"], "verdict": row["verdict"],
                         **({"planted_z": p["planted_z"]} if probe is not None else {}),
                         "top descriptor (partial Spearman rho)": _top_text(top),
                         "groups tied at the top": ", ".join(p.get("acoustic_leading_groups", [])) or "—"})
        index[label] = pd.DataFrame(rows)
    return index
