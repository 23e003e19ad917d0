"""Resolve the frozen encoder, the SAE and the device of a run — once, by one rule.

Why one place: the default-SAE rule ("GE2E layer 3 without --sae -> the embedded SAE"), the device rule
("auto" -> CUDA when present) and the SAE digest (seconds for a 30,720-feature SAE) used to be written
in several verbs; every verb now asks :func:`resolve_models`. Importing this module loads torch, so the
CLI's verbs import it inside the verb (start-up time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clinical_transfer.encoders import get_encoder
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import file_digest, remembered
from clinical_transfer.sae import default as default_sae
from clinical_transfer.sae.formats import load_sae
from clinical_transfer.scoring import sae_hash


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; ``cuda`` (or ``cuda:N``) without
    one, or past the last one, is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ClinicalTransferError(f"--device {name} was asked for but no CUDA device is available",
                                        "use --device cpu or auto")
        n = torch.cuda.device_count()
        if ":" in name and int(name.split(":", 1)[1]) >= n:
            raise ClinicalTransferError(f"--device {name} was asked for but this machine has {n} CUDA device(s)",
                                        f"use cuda:0 ... cuda:{n - 1}, or cuda")
    return name


@dataclass
class Models:
    """The frozen encoder and SAE of a run, with the identity written into every manifest."""

    encoder: Any
    sae: Any
    sae_name: str
    """The checkpoint path, or the embedded default SAE's description."""
    sae_digest: str
    """:func:`clinical_transfer.scoring.sae_hash` of ``sae``, computed once per run."""


def checkpoint_sae_hash(path: str | Path, k: int | None, sae) -> str:
    """:func:`sae_hash` of an SAE loaded from ``path``, remembered by its checkpoint files' digests.

    Why: the tensor hash of a 30,720-feature SAE reads ~1 GB every run; the files' digests are
    remembered (:func:`clinical_transfer.hashing.file_digest`), so an unchanged checkpoint costs a
    ``stat`` per file. Any changed byte changes a file digest and so recomputes the tensor hash.
    """
    p = Path(path)
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    key = "sae|" + "|".join(f"{f.relative_to(p) if p.is_dir() else f.name}:{file_digest(f)}" for f in files)
    return remembered(f"{key}|k={k}", lambda: sae_hash(sae))


def resolve_models(encoder: str, layer: int, model: str | None = None, sae: str | None = None,
                   device: str = "auto", k: int | None = None, need_sae: bool = True, compile: bool = False) -> Models:
    """Load the encoder (on the resolved device) and its SAE (given, or the embedded default).

    ``compile``: ``torch.compile`` the Gemma decoder (measured 1,121 -> 1,639 audio-s/s on an H200, after a
    ~90 s first call; pays off for corpora of more than ~2 GPU-minutes)."""
    if compile and encoder != "gemma":
        raise ClinicalTransferError(f"--compile is for the gemma encoder, not {encoder}", "drop --compile")
    options = {"compile": True} if compile else {}
    enc = get_encoder(encoder, model=model or None, layer=layer, device=resolve_device(device), **options)
    if not need_sae:
        return Models(enc, None, "", "")
    if sae == "fit":
        raise ClinicalTransferError("--sae fit fits an SAE inside run-overlay (it needs the corpus's participant split)",
                                    "use run-overlay, or pass the fitted checkpoint: <out>/../.sae_cache/<key>/seed_0/sae.pt")
    if sae and sae != "embedded":
        model_sae, name = load_sae(sae, k=k, d_in_expected=enc.width), str(sae)
        return Models(enc, model_sae, name, checkpoint_sae_hash(sae, k, model_sae))
    elif default_sae.reads(encoder, layer):
        model_sae, name = default_sae.load_default_sae(), default_sae.DESCRIPTION
    else:
        raise ClinicalTransferError(f"no SAE configured for this encoder/layer ({encoder} layer {layer})",
                                    "pass --sae PATH or --sae fit (a label-blind SAE fit to the corpus); the embedded default SAE reads "
                                    "GE2E layer 3 only")
    return Models(enc, model_sae, name, sae_hash(model_sae))
