"""Frozen audio encoders: one protocol (base.py), several backends, one registry (registry.py)."""

from clinical_transfer.encoders.base import FrozenEncoder
from clinical_transfer.encoders.registry import EncoderEntry, encoder_names, get_encoder, register_encoder

__all__ = ["EncoderEntry", "FrozenEncoder", "encoder_names", "get_encoder", "register_encoder"]
