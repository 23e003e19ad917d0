"""Tiny random-initialised transformers audio encoders built from configs (offline, no download).

Shared by the encoder tests and benchmarks/gpu_check.py. They are test doubles for the *code path*;
nothing they produce is a result.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_whisper(path: str | Path) -> None:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        vocab_size=100, max_source_positions=1500, max_target_positions=32, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(cfg).eval().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)


def save_tiny_wav2vec2(path: str | Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(path)


class HostOnly:
    """The same encoder without ``device_hidden_states``: the host path (states on the CPU per recording,
    SAE and aggregation or dump casts in numpy), to compare a device path against."""

    def __init__(self, enc):
        self._enc = enc

    def __getattr__(self, name):
        if name == "device_hidden_states":
            raise AttributeError(name)
        return getattr(self._enc, name)
