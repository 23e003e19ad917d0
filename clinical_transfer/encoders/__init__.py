"""Frozen audio encoders: one protocol, several backends (see base.py)."""

from clinical_transfer.encoders.base import FrozenEncoder, get_encoder

__all__ = ["FrozenEncoder", "get_encoder"]
