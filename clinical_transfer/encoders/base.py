"""The FrozenEncoder protocol: audio in, per-frame hidden states at one layer out.

Why a protocol: the scoring runner, the activation dump and the SAE trainer must work with any frozen
model (the offline GE2E default, Gemma audio LLMs, Whisper/wav2vec2 encoders). Each backend states
its rate, width, layer (with its convention) and an ``id()`` that hashes weights + config, so cached
results can never be mixed up between models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the protocol only names these types; importing torch here would slow every CLI start
    import numpy as np
    import torch


class FrozenEncoder(Protocol):
    name: str
    sample_rate: int
    """Input sample rate (Hz) the model expects."""
    width: int
    """Hidden-state width."""
    layer: int
    frames_per_second: float
    layer_convention: str
    """What ``layer`` means for this model, written into every manifest."""

    def hidden_states(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        """Per-recording states, each (T_i, width), for mono float waveforms at ``sample_rate``."""

    def id(self) -> str:
        """SHA-256 over weights and configuration."""


def plan_batches(lengths: list[int], max_tokens: int, max_padding: float = 0.1, max_items: int | None = None) -> list[list[int]]:
    """Group items (by index) into forward passes of about ``max_tokens`` padded tokens each.

    Why: batching a fixed number of clips wastes the accelerator on padding (64 clips of 3-20 s padded
    to the longest: +74% tokens) and leaves it idle on small batches. Items are sorted by length
    (ties by index, so the plan is deterministic) and a pass is closed when adding the next item would
    push ``rows x longest`` over ``max_tokens``, or the padding over ``max_padding`` of the real tokens,
    or the rows over ``max_items``. An item longer than ``max_tokens`` runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    plan: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        n = max(int(lengths[i]), 1)
        rows, longest = len(cur) + 1, n  # ascending order: the new item is the longest
        fits = rows * longest <= max_tokens and rows * longest - (real + n) <= max_padding * (real + n)
        if cur and (not fits or (max_items is not None and rows > max_items)):
            plan.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        plan.append(cur)
    return plan
