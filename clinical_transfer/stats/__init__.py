"""Confound-controlled correlate statistics over many features at once (knows nothing of audio)."""

from clinical_transfer.stats.design import LabelSpec
from clinical_transfer.stats.options import OverlayConfig
from clinical_transfer.stats.overlay import OverlayResult, overlay

__all__ = ["LabelSpec", "OverlayConfig", "OverlayResult", "overlay"]
