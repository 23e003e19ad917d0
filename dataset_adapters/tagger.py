"""A small acoustic tagger: does a recording *sound like* the segment type it is declared as?

Why: crowd-sourced corpora contain mislabelled and off-task uploads (speech in the cough slot, silence in
the vowel slot). The tagger is a content check, not a classifier of people: it looks at voicing,
onset rate, spectral flatness and the energy envelope and names the segment group the audio resembles.
Its agreement with the declared type is a data-quality column (``tag_agreement``) and is reported.

Rules, in words (thresholds live in :class:`TaggerConfig`):

* very impulsive short bursts (sharp attack), voiced or not      -> ``cough``
* mostly voiced, few steady segments, few onsets                  -> ``vowel``
* mostly voiced, many segments or frequent onsets                 -> ``prompted_speech``
* mostly unvoiced with sharp attacks                              -> ``cough``
* mostly unvoiced, smooth envelopes                               -> ``breath``
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from clinical_transfer.audio import resample

TAG_SAMPLE_RATE_HZ = 16000
_FRAME = 640  # 40 ms analysis window at 16 kHz (two periods of a 50 Hz voice)
_HOP = 160  # 10 ms


@dataclass(frozen=True)
class TagFeatures:
    """What the rules look at; kept so reports can show why a tag was given."""

    active_fraction: float
    voiced_fraction: float
    onset_rate_hz: float
    segments_per_s: float
    mean_segment_s: float
    flatness: float
    attack_ratio: float
    spectral_change: float


@dataclass(frozen=True)
class TaggerConfig:
    """Thresholds of the content check."""

    active_db_below_peak: float = 30.0
    """Frames within this many dB of the loudest frame count as active ..."""
    active_db_above_floor: float = 10.0
    """... and at least this far above the noise floor (10th percentile of frame energy)."""
    voicing_threshold: float = 0.45
    """Normalised autocorrelation peak (lags 2.5-14 ms, i.e. 70-400 Hz) above which a frame is voiced."""
    voiced_fraction_min: float = 0.35
    """Share of active frames that must be voiced for a voice (vowel/speech) tag."""
    vowel_max_segments_per_s: float = 0.9
    """A sustained vowel has at most this many separate active segments per second."""
    vowel_max_onset_rate_hz: float = 2.0
    """... and either at most this many spectral onsets per second ..."""
    vowel_max_spectral_change: float = 5.0
    """... or a cepstral distance between voiced frames 50 ms apart below this (one held envelope)."""
    cough_burst_max_s: float = 0.4
    """Very impulsive bursts shorter than this are coughs even when partly voiced ..."""
    cough_burst_min_attack: float = 20.0
    """... when their median attack (peak / energy just before the burst, in amplitude) exceeds this."""
    cough_min_attack: float = 8.0
    """Unvoiced audio with a median attack above this is cough-like; below, breath-like."""


def _segments(active: np.ndarray, min_gap: int = 5) -> list[tuple[int, int]]:
    """Runs of active frames, bridging gaps shorter than ``min_gap`` frames."""
    runs: list[list[int]] = []
    idx = np.flatnonzero(active)
    for i in idx:
        if runs and i - runs[-1][1] <= min_gap:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a, b + 1) for a, b in runs]


#: Analysis frames processed at a time (20 s): every per-frame quantity is computed block by block, so a
#: 10-minute recording needs ~0.1 GB here, not the ~2.5 GB that whole-signal framing, FFTs and
#: autocorrelations took (#12). Whole-recording statistics (noise floor, peak, dB scaling, onset
#: normalisation) are taken afterwards over the per-frame vectors, so the result does not depend on it.
BLOCK_FRAMES = 2000
_ONSET_FFT = 2048  # librosa's onset_strength defaults (n_fft 2048, 128 mel bands), computed in blocks


@functools.lru_cache(maxsize=8)
def _mel_basis(n_bins: int, n_mels: int) -> np.ndarray:
    import librosa

    basis = librosa.filters.mel(sr=TAG_SAMPLE_RATE_HZ, n_fft=2 * (n_bins - 1), n_mels=n_mels)
    basis.setflags(write=False)  # shared between calls
    return basis


def _melspectrogram(power: np.ndarray, n_mels: int = 128) -> np.ndarray:
    """``librosa.feature.melspectrogram(S=power, sr=16000, n_mels=n_mels)``, byte for byte (its n_fft
    inferred from the rows, then the same einsum), with the filter bank built once per shape.

    Why: librosa builds the filter bank on every call (~1.6 ms, two calls per recording, more per block
    of a long one): ~4% of the inventory's content check, for nothing."""
    return np.einsum("...ft,mf->...mt", power, _mel_basis(power.shape[-2], n_mels), optimize=True)


def _frame_measures(y: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """Per 40 ms frame: energy, periodicity (autocorrelation peak at lags ``lo``..``hi`` samples), spectral
    flatness and a 40-band mel power spectrum, computed :data:`BLOCK_FRAMES` frames at a time."""
    import librosa

    frames = librosa.util.frame(y, frame_length=_FRAME, hop_length=_HOP)  # a view: (frame, n)
    n = frames.shape[1]
    energy, periodicity, flat = np.empty(n), np.empty(n), np.empty(n)
    mel = np.empty((40, n))
    window = np.hanning(_FRAME)[:, None]
    # Undo the window's own autocorrelation taper so long lags are not penalised.
    w_ac = np.correlate(np.hanning(_FRAME), np.hanning(_FRAME), "full")[_FRAME - 1 :]
    for a in range(0, n, BLOCK_FRAMES):
        b = min(a + BLOCK_FRAMES, n)
        fr = frames[:, a:b] - frames[:, a:b].mean(axis=0, keepdims=True)
        energy[a:b] = np.mean(fr**2, axis=0)
        spec = np.fft.rfft(fr * window, n=2 * _FRAME, axis=0)
        spec_power = np.abs(spec) ** 2  # the autocorrelation's and the mel spectrum's, computed once
        ac = np.fft.irfft(spec_power, axis=0)[:_FRAME]
        ac = ac / np.maximum(ac[0], 1e-20)
        ac = ac[:hi] / (w_ac[:hi, None] / w_ac[0])
        # Only peaks after the autocorrelation first turns negative count: low-passed noise decays
        # smoothly from lag 0 and must not look periodic.
        past_first_dip = np.maximum.accumulate(ac < 0, axis=0)
        periodicity[a:b] = np.where(past_first_dip, ac, 0.0)[lo:hi].max(axis=0)
        power = spec_power[:_FRAME // 2] + 1e-20
        mel[:, a:b] = _melspectrogram(power, n_mels=40)
        flat[a:b] = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)
    return energy, periodicity, flat, mel


def _onsets(y: np.ndarray) -> np.ndarray:
    """``librosa.onset.onset_detect(y=y)`` at :data:`_HOP`, with its mel spectrogram built in blocks of
    frames (the centred, zero-padded frames librosa would take) and the dB scaling and onset strength
    over the whole: the same onsets without a whole-signal STFT in memory."""
    import librosa

    padded = np.pad(np.asarray(y, np.float32), _ONSET_FFT // 2, mode="constant")
    n = 1 + (len(padded) - _ONSET_FFT) // _HOP
    mel = np.empty((128, n), np.float32)
    for a in range(0, n, BLOCK_FRAMES):
        b = min(a + BLOCK_FRAMES, n)
        seg = padded[a * _HOP : (b - 1) * _HOP + _ONSET_FFT]
        power = np.abs(librosa.stft(seg, n_fft=_ONSET_FFT, hop_length=_HOP, center=False)) ** 2
        mel[:, a:b] = _melspectrogram(power)
    envelope = librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=TAG_SAMPLE_RATE_HZ, hop_length=_HOP)
    return librosa.onset.onset_detect(onset_envelope=envelope, sr=TAG_SAMPLE_RATE_HZ, hop_length=_HOP)


def features(y: np.ndarray, sr: int, cfg: TaggerConfig = TaggerConfig()) -> TagFeatures:
    """Content features of a mono waveform (any rate; analysed at 16 kHz)."""
    import librosa  # start-up time: ~1 s to import; the CLI's start and --help never need it

    if sr != TAG_SAMPLE_RATE_HZ:
        y = resample(np.asarray(y, np.float32), sr, TAG_SAMPLE_RATE_HZ)  # librosa's soxr_hq, the one resampler
    y = np.asarray(y, np.float64)
    y = sosfilt(butter(2, 70.0, btype="high", fs=TAG_SAMPLE_RATE_HZ, output="sos"), y)  # drop hum and DC
    if len(y) < _FRAME:
        y = np.pad(y, (0, _FRAME - len(y)))
    lo, hi = TAG_SAMPLE_RATE_HZ // 400, TAG_SAMPLE_RATE_HZ // 70
    energy, periodicity, flat, mel = _frame_measures(y, lo, hi)
    db = 10 * np.log10(np.maximum(energy, 1e-20))
    floor = np.percentile(db, 10)
    # A recording with no quiet part (floor close to peak) is active throughout.
    above_floor = min(floor + cfg.active_db_above_floor, db.max() - 6.0)
    active = db > max(db.max() - cfg.active_db_below_peak, above_floor, -70.0)
    n_active = max(int(active.sum()), 1)
    voiced = active & (periodicity > cfg.voicing_threshold)

    # Spectral-envelope movement (cepstral distance between voiced frames 50 ms apart): a sustained
    # vowel holds one envelope, counting moves through many.
    ceps = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=13)[1:]
    lag = 5
    pairs = voiced[lag:] & voiced[:-lag]
    change = np.sqrt(np.mean((ceps[:, lag:] - ceps[:, :-lag]) ** 2, axis=0))
    spectral_change = float(np.median(change[pairs])) if pairs.any() else 0.0
    segs = _segments(active)
    dur_s = len(y) / TAG_SAMPLE_RATE_HZ
    lin = np.sqrt(energy)
    attacks = []
    for a, b in segs:
        peak = int(a + np.argmax(lin[a:b]))
        before = lin[max(a - 3, 0)] + 1e-12
        if peak - a <= 8:  # the peak comes within 80 ms of the segment start: an impulsive attack
            attacks.append(lin[peak] / before)
        else:
            attacks.append(1.0)
    onset = _onsets(y)
    return TagFeatures(
        active_fraction=float(active.mean()),
        voiced_fraction=float(voiced.sum() / n_active),
        onset_rate_hz=float(len(onset) / dur_s),
        segments_per_s=float(len(segs) / dur_s),
        mean_segment_s=float(np.mean([b - a for a, b in segs]) * _HOP / TAG_SAMPLE_RATE_HZ) if segs else 0.0,
        flatness=float(np.mean(flat[active])) if active.any() else 1.0,
        attack_ratio=float(np.median(attacks)) if attacks else 1.0,
        spectral_change=spectral_change,
    )


def tag_from_features(f: TagFeatures, cfg: TaggerConfig = TaggerConfig()) -> str:
    """Apply the rules of the module docstring."""
    if f.attack_ratio >= cfg.cough_burst_min_attack and f.mean_segment_s < cfg.cough_burst_max_s:
        return "cough"
    if f.voiced_fraction >= cfg.voiced_fraction_min:
        held = f.onset_rate_hz < cfg.vowel_max_onset_rate_hz or f.spectral_change < cfg.vowel_max_spectral_change
        steady = f.segments_per_s <= cfg.vowel_max_segments_per_s and held
        return "vowel" if steady else "prompted_speech"
    return "cough" if f.attack_ratio >= cfg.cough_min_attack else "breath"


def tag(y: np.ndarray, sr: int, cfg: TaggerConfig = TaggerConfig()) -> str:
    """The segment group a recording sounds like."""
    return tag_from_features(features(y, sr, cfg), cfg)
