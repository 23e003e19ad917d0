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
