"""The offline default encoder: the GE2E speaker encoder whose weights ship in the ``resemblyzer`` wheel.

Why this one: it installs from PyPI with its weights (17 MB, Apache-2.0), needs no network, and was
trained for speaker identity, so voice quality, sex and age show up strongly — good positive controls.
We never import ``resemblyzer`` (it fails on current setuptools); the state dict is read with plain torch
from the installed package folder.

Front end (as resemblyzer): 16 kHz, volume raised to −30 dBFS (never lowered), librosa's 40-band mel
filterbank on a power STFT (25 ms Hann window, 10 ms hop, centred) — computed here in torch. Then a
3-layer LSTM (40 → 256); ``layer`` 1-3 picks whose per-frame outputs are returned (100 frames/s, 256
wide). The model was trained on 1.6 s windows, so long recordings run in 1.6 s windows with 50 % overlap
and each frame takes its state from the window where it lies in the central half. Resemblyzer's VAD
trimming is *not* applied: silence is part of what the overlays must control for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import sha256_file, sha256_text

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s
TARGET_DBFS = -30.0


def weights_path() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise ClinicalTransferError("the 'resemblyzer' package (which ships the GE2E weights) is not installed",
                                    "install the project with its dependencies: make env")
    return Path(spec.origin).parent / "pretrained.pt"


class MelFrontEnd(torch.nn.Module):
    """librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40) in torch."""

    def __init__(self):
        super().__init__()
        import librosa  # start-up time (see tagger.features)

        self.register_buffer("mel", torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)))
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float64))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(samples,) float waveform -> (frames, 40) mel power, frames = 1 + samples // 160."""
        spec = torch.stft(y.to(torch.float64), N_FFT, HOP, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)
        power = spec.real**2 + spec.imag**2
        return (self.mel.to(torch.float64) @ power).T.to(torch.float32)


class GE2EEncoder:
    """GE2E LSTM states at layer 1, 2 or 3 (outputs of that LSTM layer; 1 = first)."""

    name = "ge2e"
    sample_rate = SAMPLE_RATE
    width = 256
    frames_per_second = SAMPLE_RATE / HOP
    layer_convention = "output of LSTM layer L (1-based) of the 3-layer GE2E encoder, per 10 ms frame"

    def __init__(self, layer: int = 3, device: str = "cpu", batch_windows: int = 256):
        if layer not in (1, 2, 3):
            raise ClinicalTransferError(f"GE2E has LSTM layers 1-3, not {layer}", "pass --layer 1, 2 or 3")
        self.layer = layer
        self.device = torch.device(device)
        self.batch_windows = batch_windows
        path = weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self._digest = sha256_file(path)
        self.front = MelFrontEnd().to(self.device)
        self.lstms = []
        for i in range(layer):
            lstm = torch.nn.LSTM(N_MELS if i == 0 else 256, 256, 1, batch_first=True)
            lstm.load_state_dict({f"{p}_l0": state[f"lstm.{p}_l{i}"]
                                  for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            self.lstms.append(lstm.to(self.device).eval())

    def id(self) -> str:
        return sha256_text(f"{self.name}:{self._digest}:layer={self.layer}:v1")

    @staticmethod
    def _normalise_volume(y: np.ndarray) -> np.ndarray:
        rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if len(y) else 0.0
        if rms <= 0:
            return y
        change_db = TARGET_DBFS - 20 * np.log10(rms)
        return y * (10 ** (change_db / 20)) if change_db > 0 else y

    def _windows(self, n: int) -> list[tuple[int, int, int, int]]:
        """(window start, window end, keep from, keep to) in frames: 1.6 s windows, hop 0.8 s."""
        if n <= WINDOW_FRAMES:
            return [(0, n, 0, n)]
        hop = WINDOW_FRAMES // 2
        starts = list(range(0, n - WINDOW_FRAMES + 1, hop))
        if starts[-1] + WINDOW_FRAMES < n:
            starts.append(n - WINDOW_FRAMES)
        out = []
        for i, s in enumerate(starts):
            lo = 0 if i == 0 else max(s + WINDOW_FRAMES // 4, out[-1][3])
            hi = n if i == len(starts) - 1 else s + 3 * WINDOW_FRAMES // 4
            out.append((s, s + WINDOW_FRAMES, lo, hi))
        return out

    @torch.inference_mode()
    def hidden_states(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        mels = [self.front(torch.from_numpy(self._normalise_volume(np.asarray(y, np.float32))).to(self.device))
                for y in batch]
        plans = [self._windows(m.shape[0]) for m in mels]
        jobs = [(r, w) for r, plan in enumerate(plans) for w in plan]
        states = [torch.zeros(m.shape[0], self.width) for m in mels]
        for lo in range(0, len(jobs), self.batch_windows):
            chunk = jobs[lo : lo + self.batch_windows]
            # zero padding after a short window cannot change a forward LSTM's earlier outputs
            x = torch.nn.utils.rnn.pad_sequence([mels[r][w[0] : w[1]] for r, w in chunk], batch_first=True)
            for lstm in self.lstms:
                x, _ = lstm(x)
            for i, (r, (start, _, keep_lo, keep_hi)) in enumerate(chunk):
                states[r][keep_lo:keep_hi] = x[i, keep_lo - start : keep_hi - start].cpu()
        return states
