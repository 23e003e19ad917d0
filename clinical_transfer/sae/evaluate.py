"""Held-out SAE evaluation: FVE, normalised L2, L0, dead fraction, feature density — streamed.

    FVE = 1 − Σ‖x − x̂‖² / Σ‖x − μ‖²      μ = per-dimension mean over all evaluated tokens

Why streamed and float64: held-out sets have millions of tokens; sums and the per-dimension mean/M2
(Chan's parallel update) are accumulated in float64 batch by batch. The variance is taken about μ,
never about zero (the SAELens pitfall that inflated FVE before 2026, e.g. 0.98 vs 0.78).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from clinical_transfer import guardrails
from clinical_transfer.sae.model import SparseAutoencoder


@dataclass
class EvalSummary:
    n_tokens: int
    fve: float
    """Fraction of variance explained (variance about the per-dimension mean)."""
    normalized_l2: float
    """Mean over tokens of ‖x − x̂‖₂ / ‖x‖₂."""
    l0: float
    """Mean number of non-zero codes per token."""
    dead_fraction: float
    """Share of features that never fired on the evaluated tokens."""
    mse: float
    """Mean squared error per element."""

    def to_dict(self) -> dict:
        return {**asdict(self), "fve_definition": "1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 (mean per dimension)",
                "normalized_l2_definition": "mean over tokens of ||x - x_hat||_2 / ||x||_2"}


class StreamingEval:
    """Accumulates the metrics over batches of (x, x̂, codes)."""

    def __init__(self, d_in: int, d_sae: int):
        self.n = 0
        self.mean = np.zeros(d_in)
        self.m2 = np.zeros(d_in)
        self.sse = 0.0
        self.nl2 = 0.0
        self.l0 = 0.0
        self.fired = np.zeros(d_sae, dtype=np.int64)

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        x64 = x.detach().to(torch.float64).cpu().numpy()
        r64 = x64 - x_hat.detach().to(torch.float64).cpu().numpy()
        nb = x64.shape[0]
        if nb == 0:
            return
        bmean = x64.mean(axis=0)
        bm2 = ((x64 - bmean) ** 2).sum(axis=0)
        delta = bmean - self.mean
        tot = self.n + nb
        self.mean = self.mean + delta * nb / tot
        self.m2 = self.m2 + bm2 + delta**2 * self.n * nb / tot
        self.n = tot
        self.sse += float((r64**2).sum())
        norms = np.linalg.norm(x64, axis=1)
        self.nl2 += float((np.linalg.norm(r64, axis=1) / np.maximum(norms, 1e-12)).sum())
        active = (codes != 0).cpu().numpy()
        self.l0 += float(active.sum())
        self.fired += active.sum(axis=0)

    def summary(self) -> EvalSummary:
        sst = float(self.m2.sum())
        d_in = self.mean.shape[0]
        return EvalSummary(
            n_tokens=self.n,
            fve=1.0 - self.sse / sst if sst > 0 else float("nan"),
            normalized_l2=self.nl2 / max(self.n, 1),
            l0=self.l0 / max(self.n, 1),
            dead_fraction=float((self.fired == 0).mean()),
            mse=self.sse / max(self.n * d_in, 1),
        )

    @property
    def density(self) -> np.ndarray:
        """Firing frequency of each feature (fraction of tokens)."""
        return self.fired / max(self.n, 1)


@torch.inference_mode()
def evaluate(sae: SparseAutoencoder, batches: Iterable[torch.Tensor]) -> tuple[EvalSummary, np.ndarray]:
    """Stream held-out activation batches through the SAE; returns the summary and feature densities."""
    acc = StreamingEval(sae.cfg.d_in, sae.cfg.d_sae)
    for x in batches:
        x = x.to(sae.W_enc.dtype)
        xn, mu, std = sae._normalise(x)
        z = sae._activate(sae.pre_activations(xn))
        x_hat = sae.decode(z)
        if mu is not None:
            x_hat = x_hat * std + mu
        acc.update(x, x_hat, z)
    return acc.summary(), acc.density


def write_eval(summary: EvalSummary, density: np.ndarray, out: str | Path, extra: dict | None = None) -> Path:
    """``out/test_eval/summary.json`` (the reference atlas layout) and a feature-density histogram."""
    folder = Path(out) / "test_eval"
    folder.mkdir(parents=True, exist_ok=True)
    path = guardrails.write_json({**summary.to_dict(), **(extra or {})}, folder / "summary.json")
    import matplotlib  # start-up time: only the SAE commands draw this histogram

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    live = density[density > 0]
    if live.size:
        ax.hist(np.log10(live), bins=40, color="#4c72b0")
    ax.set_xlabel("log10 firing frequency (fraction of held-out tokens)")
    ax.set_ylabel("features")
    ax.set_title(f"Feature density — {int((density == 0).sum())} dead of {density.size}")
    fig.text(0.01, 0.01, guardrails.BANNER, fontsize=5, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(folder / "feature_density.png")
    plt.close(fig)
    return path
