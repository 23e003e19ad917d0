"""Preloaded by the inventory's fork server: import and warm the content checks once.

Why: librosa imports lazily and compiles its numba kernels on first use (~2.5 s). Running one check on
a generated second of noise here, in the fork server, means every forked worker starts warm.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from clinical_transfer.audio import AudioCheckConfig
from dataset_adapters.inventory import _inspect_job


def _warm() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000, format="WAV")
    _inspect_job(buf.getvalue(), AudioCheckConfig(), True)


_warm()
