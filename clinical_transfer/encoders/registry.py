"""The encoder registry: name -> factory, importable without torch.

Why lazy: the CLI lists the encoder choices at start-up and the config validates ``[encoder] name`` at
load; neither should pay for importing torch or transformers. A new frozen encoder is one module with a
class that follows :class:`clinical_transfer.encoders.base.FrozenEncoder` plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from clinical_transfer.errors import ClinicalTransferError


@dataclass(frozen=True)
class EncoderEntry:
    target: str
    """``module:Class`` of the backend."""
    needs_model: bool
    """True when the backend loads weights from a local ``--model`` folder (nothing is downloaded)."""
    descriptors: bool = False
    """True for a named per-recording descriptor set (no frames, no SAE): the overlay tests it directly."""


_REGISTRY: dict[str, EncoderEntry] = {
    "ge2e": EncoderEntry("clinical_transfer.encoders.embedded:GE2EEncoder", needs_model=False),
    "gemma": EncoderEntry("clinical_transfer.encoders.hf:GemmaAudioEncoder", needs_model=True),
    "hf-encoder": EncoderEntry("clinical_transfer.encoders.hf:HFSpeechEncoder", needs_model=True),
    "egemaps": EncoderEntry("clinical_transfer.acoustics:egemaps_table", needs_model=False, descriptors=True),
}


def register_encoder(name: str, entry: EncoderEntry) -> None:
    """Register a frozen encoder backend under ``name``."""
    _REGISTRY[name] = entry


def encoder_names(descriptors: bool = False) -> tuple[str, ...]:
    """Registered frame-encoder names, in registration order (the CLI's ``--encoder`` choices); with
    ``descriptors``, the per-recording descriptor sets too (what run-overlay can test)."""
    return tuple(n for n, e in _REGISTRY.items() if descriptors or not e.descriptors)


def is_descriptor_set(name: str) -> bool:
    """Whether ``name`` is a descriptor set (eGeMAPS) rather than a frame encoder."""
    return name in _REGISTRY and _REGISTRY[name].descriptors


def get_encoder(name: str = "ge2e", model: str | None = None, **options: Any):
    """Instantiate a backend by name (backends that need weights take ``model``, a local folder)."""
    if name not in _REGISTRY:
        raise ClinicalTransferError(f"unknown encoder {name!r}", f"use one of: {', '.join(_REGISTRY)}")
    entry = _REGISTRY[name]
    if entry.descriptors:
        raise ClinicalTransferError(f"{name!r} is a set of per-recording descriptors, not a frame encoder",
                                    "use it with run-overlay --encoder egemaps (no SAE), or pick a frame encoder")
    module, cls = entry.target.split(":")
    factory = getattr(importlib.import_module(module), cls)
    if entry.needs_model:
        if not model:
            raise ClinicalTransferError(f"encoder {name!r} needs a local model folder", "pass --model PATH")
        return factory(model, **options)
    return factory(**options)
