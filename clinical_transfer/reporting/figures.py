"""Figures of an overlay: volcano, segment-group x top-feature heatmap, per-feature forest plots.

Every figure carries the non-diagnostic label twice: as caption text inside the image and as the PNG
``Description`` metadata that ``clinical-transfer audit`` checks. Only group-level statistics are drawn.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clinical_transfer import guardrails  # noqa: E402
from clinical_transfer.taxonomy import ANALYSED_GROUPS  # noqa: E402

COLORS = {"robust correlate": "#c0392b", "confound-explained": "#2980b9", "unstable across splits": "#e67e22",
          "not significant": "#b0b0b0", "suppressed": "#dddddd"}
GROUPS = ANALYSED_GROUPS


def save_figure(fig, path: Path, source: str | None = None) -> Path:
    """Caption with the label inside the image, and the label in the PNG metadata. ``source`` names the
    audio a picture of audio was drawn from (``guardrails.SYNTHETIC_SOURCE``): the audit allows such
    pictures only in a demo run."""
    fig.text(0.005, 0.005, guardrails.BANNER, fontsize=6, color="#444444", ha="left", va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"Description": guardrails.BANNER, "Software": "clinical-transfer"}
    if source is not None:
        meta["Source"] = source
    fig.savefig(path, dpi=110, metadata=meta)
    plt.close(fig)
    return path


def volcano(table: pd.DataFrame, label: str, path: Path) -> Path:
    """Adjusted effect (Cohen's d, or partial r for a continuous label) against -log10 q, per group."""
    groups = [g for g in GROUPS if g in set(table["segment_group"])] or sorted(set(table["segment_group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.4), squeeze=False)
    effect = "cohen_d_adj" if table["cohen_d_adj"].notna().any() else "partial_r"
    for ax, g in zip(axes[0], groups):
        t = table[table["segment_group"] == g]
        for verdict, color in COLORS.items():
            s = t[t["verdict"] == verdict]
            if len(s) and s[effect].notna().any():
                ax.scatter(s[effect], -np.log10(s["q_adj"].clip(lower=1e-300)), s=6, c=color, label=verdict,
                           alpha=0.8, linewidths=0)
        ax.axhline(-np.log10(0.05), color="#555555", lw=0.8, ls="--")
        ax.set_title(g.replace("_", " "), fontsize=10)
        ax.set_xlabel("adjusted effect (" + ("Cohen's d" if effect == "cohen_d_adj" else "partial r") + ")", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("-log10 q (BH, adjusted)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        h, lab = ax.get_legend_handles_labels()
        handles += [x for x, y in zip(h, lab) if y not in labels]
        labels += [y for y in lab if y not in labels]
    fig.legend(handles, labels, loc="upper right", fontsize=7, markerscale=2, frameon=False)
    fig.suptitle(f"{label}: correlates per segment group (never pooled)", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 0.86, 0.95))
    return save_figure(fig, path)


def heatmap(table: pd.DataFrame, label: str, path: Path, top: int = 12) -> Path | None:
    """Adjusted t of the strongest features (smallest q in any group) across segment groups."""
    live = table[table["verdict"] != "suppressed"].dropna(subset=["q_adj"])
    if live.empty:
        return None
    feats = live.groupby("feature")["q_adj"].min().nsmallest(top).index.tolist()
    groups = [g for g in GROUPS if g in set(live["segment_group"])]
    grid = live.pivot_table(index="segment_group", columns="feature", values="t_adj").reindex(index=groups, columns=feats)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(feats), 2.4 + 0.5 * len(groups)))
    lim = float(np.nanmax(np.abs(grid.to_numpy()))) if np.isfinite(grid.to_numpy()).any() else 1.0
    im = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    short = [f.replace("feature_", "f").replace("egemaps_", "")[:24] for f in feats]  # eGeMAPS names are long
    ax.set_xticks(range(len(feats)), short, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(groups)), [g.replace("_", " ") for g in groups], fontsize=8)
    fig.colorbar(im, ax=ax, label="adjusted t", shrink=0.8)
    ax.set_title(f"{label}: strongest features by segment group", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path)


def forest_rows(splits: pd.DataFrame, label: str, group: str, feature: str) -> pd.DataFrame:
    """The per-stratum rows of one (label, segment group, feature); a label's splits table also holds its
    positive controls' splits, which must not be mixed in."""
    return splits[(splits["label"] == label) & (splits["segment_group"] == group) & (splits["feature"] == feature)]


def forest(splits: pd.DataFrame, overall: pd.Series, label: str, group: str, feature: str, path: Path) -> Path | None:
    """Per-stratum estimates (±1.96 SE) of one feature beside its overall adjusted estimate."""
    s = forest_rows(splits, label, group, feature)
    if s.empty:
        return None
    rows = [(f"{r.split_variable}={r.stratum}", r.beta, r.se) for r in s.itertuples()]
    rows.append(("overall (adjusted)", float(overall["beta_adj"]), float(overall["se_adj"])))
    fig, ax = plt.subplots(figsize=(5.5, 0.9 + 0.32 * len(rows)))
    for i, (name, b, se) in enumerate(rows):
        color = "#222222" if name.startswith("overall") else "#2c7fb8"
        ax.errorbar(b, i, xerr=1.96 * se, fmt="o", color=color, ms=4, capsize=2)
    ax.axvline(0, color="#888888", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("adjusted effect (β, ±1.96 SE)", fontsize=8)
    ax.set_title(f"{label} / {group.replace('_', ' ')} / {feature}: stability across confound splits", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


def stability_histogram(stability: np.ndarray, path: Path, stable: float = 0.8) -> Path:
    """Histogram of the SAE features' seed stability, with the stable threshold marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(np.asarray(stability, float), bins=np.linspace(0, 1, 41), color="#7f8c8d")
    ax.axvline(stable, color="#c0392b", lw=1)
    ax.set_xlabel("seed stability (matched decoder cosine)")
    ax.set_ylabel("SAE features")
    ax.set_title(f"{int((np.asarray(stability) >= stable).sum())} of {len(stability)} features stable (>= {stable})",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, path)
