"""The FrozenEncoder protocol: audio in, per-frame hidden states at one layer out.

Why a protocol: the scoring runner, the activation dump and the SAE trainer must work with any frozen
model (the offline GE2E default, Gemma audio LLMs, Whisper/wav2vec2 encoders). Each backend states
its rate, width, layer (with its convention) and an ``id()`` that hashes weights + config, so cached
results can never be mixed up between models.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from clinical_transfer.errors import ClinicalTransferError


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


ENCODERS = ("ge2e", "gemma", "hf-encoder")


def get_encoder(name: str = "ge2e", model: str | None = None, **options) -> FrozenEncoder:
    """Instantiate a backend by name (``gemma`` and ``hf-encoder`` need ``model``, a local folder)."""
    if name == "ge2e":
        from clinical_transfer.encoders.embedded import GE2EEncoder

        return GE2EEncoder(**options)
    if name in ("gemma", "hf-encoder"):
        if not model:
            raise ClinicalTransferError(f"encoder {name!r} needs a local model folder", "pass --model PATH")
        from clinical_transfer.encoders.hf import GemmaAudioEncoder, HFSpeechEncoder

        return (GemmaAudioEncoder if name == "gemma" else HFSpeechEncoder)(model, **options)
    raise ClinicalTransferError(f"unknown encoder {name!r}", f"use one of: {', '.join(ENCODERS)}")
