"""The embedded default SAE: where it lives and how to load it (its recipe is in ``run/default_sae.py``).

Why shipped: ``run-overlay --demo`` must work offline in minutes on 2 cores. It is a *demo artifact*: a
small TopK SAE over GE2E layer-3 states of the synthetic demo corpus. It proves the machinery; it is not a
model of real voices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.sae.formats import load_sae
from clinical_transfer.sae.model import SparseAutoencoder
from clinical_transfer.sae.stability import decoder_stability

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "data" / "default_sae"
#: The one encoder and layer the embedded SAE reads (the default-SAE rule of every run).
ENCODER, LAYER, WIDTH = "ge2e", 3, 256
DESCRIPTION = "embedded default SAE (demo artifact)"
STABILITY_FILE = "stability_decoders.npz"
"""Decoders of the same recipe trained with other seeds (float16): the embedded SAE's seed stability."""


def default_sae_path() -> Path:
    path = DEFAULT_DIR / "sae.pt"
    if not path.is_file():
        raise ClinicalTransferError(f"the embedded default SAE is missing ({path})",
                                    "regenerate it with: clinical-transfer build-default-sae")
    return path


def reads(encoder: str, layer: int) -> bool:
    """Whether the embedded SAE was trained on this encoder's layer (else an SAE must be given)."""
    return encoder == ENCODER and layer == LAYER


def load_default_sae() -> SparseAutoencoder:
    return load_sae(default_sae_path(), d_in_expected=WIDTH)


def default_stability():
    """Seed stability of every embedded-SAE feature against the shipped other-seed decoders (None when
    they are not shipped)."""
    path = DEFAULT_DIR / STABILITY_FILE
    if not path.is_file():
        return None
    with np.load(path) as z:
        others = [z[k].astype(np.float32) for k in sorted(z.files)]
    return decoder_stability(load_default_sae(), others)
