"""Synthetic clinical-style audio: source-filter vowels and counting, cough bursts, breath noise.

Why: the demo corpus must exercise the whole pipeline with *known* effects (voice quality, sex, age,
recording device) without shipping any real person's voice. Parameters are named after the acoustics
they control (F0 in Hz, jitter and shimmer as relative perturbations, formants in Hz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

#: First three formants (Hz) of an adult male voice; scaled for shorter vocal tracts.
VOWEL_FORMANTS = {"a": (730.0, 1090.0, 2440.0), "e": (400.0, 2000.0, 2600.0), "o": (570.0, 840.0, 2410.0)}
_BANDWIDTHS = (80.0, 100.0, 150.0)


@dataclass(frozen=True)
class Voice:
    """A speaker's voice: what the demo corpus plants effects into."""

    f0_hz: float = 120.0
    formant_scale: float = 1.0
    jitter: float = 0.005  # relative s.d. of period length, per glottal cycle
    shimmer: float = 0.04  # relative s.d. of pulse amplitude, per glottal cycle
    breathiness: float = 0.03  # aspiration-noise amplitude relative to the voiced source
    noise_floor_dbfs: float = -65.0  # background noise of the recording device
    device_lowpass_hz: float | None = None  # band limit of the recording device


def _glottal_source(n: int, f0: np.ndarray, voice: Voice, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Impulse train with per-cycle jitter and shimmer, smoothed into a glottal-like pulse."""
    src = np.zeros(n)
    t = 0.0
    while t < n:
        i = int(t)
        src[i] += 1.0 + voice.shimmer * rng.standard_normal()
        period = sr / max(f0[i], 40.0)
        t += period * (1.0 + voice.jitter * rng.standard_normal())
    # Two one-pole low-passes give the -12 dB/octave tilt of a glottal flow derivative.
    src = lfilter([1.0], [1.0, -0.97], src)
    src = lfilter([1.0], [1.0, -0.9], src)
    src -= lfilter([1.0], [1.0, -0.995], src) * 0.005  # remove DC drift
    aspiration = voice.breathiness * rng.standard_normal(n) * np.std(src) * 3.0
    return src + aspiration


def _formant_filter(x: np.ndarray, formants: tuple[float, ...], sr: int) -> np.ndarray:
    y = x
    for f, bw in zip(formants, _BANDWIDTHS):
        r = np.exp(-np.pi * bw / sr)
        theta = 2.0 * np.pi * f / sr
        y = lfilter([1.0 - r], [1.0, -2.0 * r * np.cos(theta), r * r], y)
    return y


def _normalise(y: np.ndarray, peak: float) -> np.ndarray:
    m = np.max(np.abs(y))
    return y * (peak / m) if m > 0 else y


def _device(y: np.ndarray, voice: Voice, rng: np.random.Generator, sr: int) -> np.ndarray:
    """What the recording device adds: band limit and a noise floor."""
    if voice.device_lowpass_hz is not None and voice.device_lowpass_hz < sr / 2:
        y = sosfilt(butter(4, voice.device_lowpass_hz, fs=sr, output="sos"), y)
    noise = rng.standard_normal(len(y)) * 10 ** (voice.noise_floor_dbfs / 20.0)
    return np.clip(y + noise, -1.0, 1.0).astype(np.float32)


def _voiced_segment(
    dur_s: float, vowel: str, voice: Voice, rng: np.random.Generator, sr: int, syllable: bool = False
) -> np.ndarray:
    n = int(dur_s * sr)
    t = np.arange(n) / sr
    vibrato = 1.0 + 0.01 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 2 * np.pi))
    declination = 1.0 - 0.08 * t / max(dur_s, 1e-3)
    f0 = voice.f0_hz * vibrato * declination
    formants = tuple(f * voice.formant_scale for f in VOWEL_FORMANTS[vowel])
    y = _formant_filter(_glottal_source(n, f0, voice, rng, sr), formants, sr)
    ramp = min(int(0.03 * sr), n // 4)
    env = np.ones(n)
    if syllable:  # a syllable's energy rises and falls smoothly (peak near its middle)
        env = np.clip(np.sin(np.pi * np.arange(n) / max(n - 1, 1)), 0.0, 1.0) ** 0.7
    elif ramp:
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
    return _normalise(y * env, 1.0)


def sustained_vowel(vowel: str, dur_s: float, voice: Voice, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A sustained vowel /a/, /e/ or /o/ with a short lead-in and tail of room noise."""
    lead = np.zeros(int(0.2 * sr))
    y = np.concatenate([lead, 0.5 * _voiced_segment(dur_s - 0.4, vowel, voice, rng, sr), lead])
    return _device(y, voice, rng, sr)


def counting(dur_s: float, fast: bool, voice: Voice, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Prompted counting: syllables (voiced nucleus, sometimes a fricative onset) separated by pauses."""
    parts = [np.zeros(int(0.15 * sr))]
    total = len(parts[0])
    while total < dur_s * sr - 0.3 * sr:
        if rng.random() < 0.5:  # fricative/plosive onset
            fric = rng.standard_normal(int(rng.uniform(0.02, 0.05) * sr))
            fric = sosfilt(butter(2, [2500, 6000], btype="band", fs=sr, output="sos"), fric)
            parts.append(0.15 * _normalise(fric, 1.0))
        syl = rng.uniform(0.14, 0.22) if fast else rng.uniform(0.2, 0.32)
        v = dict(voice.__dict__)
        v["f0_hz"] = voice.f0_hz * rng.uniform(0.92, 1.1)
        vowel = str(rng.choice(list(VOWEL_FORMANTS)))
        parts.append(0.5 * _voiced_segment(syl, vowel, Voice(**v), rng, sr, syllable=True))
        gap = rng.uniform(0.06, 0.12) if fast else rng.uniform(0.15, 0.3)
        parts.append(np.zeros(int(gap * sr)))
        total = sum(len(p) for p in parts)
    y = np.concatenate(parts)[: int(dur_s * sr)]
    y = np.pad(y, (0, int(dur_s * sr) - len(y)))
    return _device(y, voice, rng, sr)


def cough(dur_s: float, heavy: bool, voice: Voice, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Coughs: broadband bursts with a sharp attack and fast decay, separated by silence."""
    n = int(dur_s * sr)
    y = np.zeros(n)
    t0 = 0.2
    lo, hi = 300.0 * voice.formant_scale, 4500.0 * voice.formant_scale
    sos = butter(2, [lo, min(hi, sr / 2 - 100)], btype="band", fs=sr, output="sos")
    while t0 < dur_s - 0.4:
        length = int(rng.uniform(0.18, 0.3) * sr)
        tt = np.arange(length) / sr
        env = (1 - np.exp(-tt / 0.004)) * np.exp(-tt / (0.09 if heavy else 0.05))
        burst = sosfilt(sos, rng.standard_normal(length)) * env
        i = int(t0 * sr)
        y[i : i + length] += _normalise(burst, 0.8 if heavy else 0.4)[: n - i]
        t0 += length / sr + rng.uniform(0.35, 0.7)
    return _device(y, voice, rng, sr)


def breathing(dur_s: float, deep: bool, voice: Voice, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Breathing: low-passed noise under slow inhale/exhale envelopes."""
    n = int(dur_s * sr)
    cutoff = 1200.0 * voice.formant_scale
    noise = sosfilt(butter(2, cutoff, fs=sr, output="sos"), rng.standard_normal(n))
    cycle = rng.uniform(1.6, 2.2) if deep else rng.uniform(1.0, 1.4)
    t = np.arange(n) / sr
    env = np.sin(np.pi * (t % (cycle / 2)) / (cycle / 2)) ** 2
    y = _normalise(noise * env, 0.25 if deep else 0.08)
    return _device(y, voice, rng, sr)
