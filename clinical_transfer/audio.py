"""Decode, measure and validate audio.

Why a module of its own: every corpus and every encoder needs the same answers to "can this file be
used, and if not, why?". A failure here is an inventory reason (``unreadable``, ``silent``,
``too_short``) attached to the recording, never an exception that stops a run.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from clinical_transfer.errors import ClinicalTransferError, first_line

#: A source locator and its bytes (``None`` when the source is absent), as corpus readers yield them.
SourceBytes = tuple[str, bytes | None]


@dataclass(frozen=True)
class AudioCheckConfig:
    """Thresholds that decide whether a recording is usable."""

    min_duration_s: float = 0.5
    """Shorter recordings are ``too_short`` (an encoder needs a few frames to say anything)."""
    silent_peak_dbfs: float = -60.0
    """A recording whose absolute peak stays below this level is ``silent`` (16-bit dither is ~-90)."""
    frame_s: float = 0.025
    """Frame length for the silence fraction."""
    silence_frame_dbfs: float = -50.0
    """A frame whose RMS is below this level counts as silence."""
    clip_level: float = 0.999
    """Samples at or above this magnitude count as clipped (reported, not rejected)."""
    max_duration_s: float = 600.0
    """Longer recordings are ``too_long``, decided from the header before any decoding: one 10-hour file
    must not take the run down (decoded float32 it would need ~12 GB)."""


@dataclass(frozen=True)
class AudioMeasures:
    """Per-recording signal measures; also used later as negative-control nuisance variables."""

    sample_rate_hz: int
    """Rate of the file as stored (before any resampling), in Hz."""
    n_channels: int
    duration_s: float
    """Length in seconds at the stored rate."""
    peak_dbfs: float
    """Absolute peak over all channels, dB re full scale."""
    rms_dbfs: float
    silence_fraction: float
    clipped_fraction: float


@dataclass(frozen=True)
class AudioCheck:
    """Outcome of validating one recording: a status, a human reason, and measures when readable."""

    status: str
    reason: str
    measures: AudioMeasures | None = None
    declared_s: float | None = None
    """The header's duration, when the recording was judged ``too_long`` from it (not decoded)."""


def _db(x: float) -> float:
    return float(20.0 * np.log10(max(x, 1e-12)))


def _container(head: bytes) -> str | None:
    """The container libsndfile cannot read, from a file's first bytes (None: leave it to libsndfile)."""
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "webm/matroska"
    if head[4:8] == b"ftyp":
        return "mp4/m4a"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    return None


def _decode_av(src, container: str) -> tuple[np.ndarray, int]:
    """Decode with PyAV (FFmpeg in its wheels): crowd-sourced corpora such as COUGHVID ship browser
    recordings as WebM/Opus, which libsndfile does not read. Native rate and channels are kept."""
    try:
        import av  # start-up time: only corpora with such files pay for loading FFmpeg
    except ImportError as exc:  # pragma: no cover - installed by the project's own files
        raise ClinicalTransferError(f"{container} audio needs the av (PyAV) package",
                                    "install the project with make (av is a dependency)") from exc
    with av.open(src) as c:
        if not c.streams.audio:
            raise ValueError(f"no audio stream in the {container} file")
        stream = c.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
        chunks = []
        for frame in c.decode(stream):
            chunks += [r.to_ndarray() for r in resampler.resample(frame)]
        chunks += [r.to_ndarray() for r in resampler.resample(None)]
    channels = stream.layout.nb_channels
    x = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, channels), np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), rate


def _open(data: bytes | str | Path) -> tuple[io.BytesIO | str, str | None]:
    """What libsndfile/PyAV read (a buffer or a path) and the container PyAV must handle (None: libsndfile)."""
    if isinstance(data, (bytes, bytearray)):
        return io.BytesIO(data), _container(bytes(data[:12]))
    with open(data, "rb") as fh:
        head = fh.read(12)
    return str(data), _container(head)


def decode(data: bytes | str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file (path or bytes) to float32 of shape (samples, channels) and its rate.

    WAV/FLAC/OGG (Vorbis, Opus) go through libsndfile; WebM/Matroska, MP4/M4A and MP3, which it does not
    read, through PyAV. Raises on unreadable input; callers that build inventories use :func:`check`
    instead, which turns errors into reasons.
    """
    src, container = _open(data)
    if container is not None:
        return _decode_av(src, container)
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    return x, int(sr)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: (samples, channels) -> (samples,); one channel is returned as a view (no copy of a
    long recording; the mean of one value is that value)."""
    if x.ndim != 2:
        return x
    return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono float signal with soxr's high-quality resampler, as ``librosa.resample`` does by
    default (``res_type="soxr_hq"``, then its length fixed to ``ceil(n * sr_out / sr_in)``): the same
    samples, byte for byte (tested against librosa).

    Why not call librosa: its first call imports scipy.signal, scipy.stats and numba (measured 2.8 s on
    the 2-core CI machine), paid by the first audio batch of every run that resamples — on a GPU the
    encoder waits for it. soxr itself imports in milliseconds.
    """
    if sr_in == sr_out:
        return y
    import soxr

    y = np.ascontiguousarray(y)
    if y.size and not np.all(np.isfinite(y)):
        raise ClinicalTransferError("audio contains NaN or infinite samples",
                                    "the inventory marks such files unreadable: re-run the inventory")
    n = int(np.ceil(len(y) * float(sr_out) / sr_in))
    out = soxr.resample(y, sr_in, sr_out, quality="soxr_hq")
    out = out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))  # librosa.util.fix_length
    return np.asarray(out, dtype=np.float32)


def load_mono(data: bytes | str | Path, sample_rate_hz: int | None = None) -> tuple[np.ndarray, int]:
    """Decode, mix to mono and optionally resample; returns (float32 waveform, rate)."""
    x, sr = decode(data)
    y = to_mono(x)
    if sample_rate_hz is not None and sample_rate_hz != sr:
        return resample(y, sr, sample_rate_hz), sample_rate_hz
    return y, sr


#: Samples measured at a time (about 60 s at 48 kHz, rounded to whole frames): a 10-minute file's float64
#: temporaries stay ~50 MB instead of ~0.6 GB. Each measure is a maximum, a count or a sum of per-block sums,
#: so a recording of one block gets exactly the numbers of a whole-signal computation.
BLOCK_SAMPLES = 2_880_000


def measure(x: np.ndarray, sr: int, cfg: AudioCheckConfig = AudioCheckConfig()) -> AudioMeasures:
    """Signal measures of a decoded (samples, channels) or mono array, computed in blocks of whole frames."""
    x2 = x if x.ndim == 2 else x[:, None]
    n = len(x2)
    hop = max(1, int(round(cfg.frame_s * sr)))
    n_frames = n // hop
    block = max(hop, BLOCK_SAMPLES // hop * hop)
    peak = sum_sq = 0.0
    silent_frames = clipped = 0
    for a in range(0, n, block):
        xb = x2[a : a + block]
        yb = to_mono(xb)
        peak = max(peak, float(np.max(np.abs(xb))))
        sum_sq += float(np.sum(np.square(yb, dtype=np.float64)))
        clipped += int(np.count_nonzero(np.abs(xb) >= cfg.clip_level))
        k = min(len(yb), (n_frames * hop) - a) // hop  # whole frames in this block (blocks start on a frame)
        if k > 0:
            frames = yb[: k * hop].reshape(k, hop).astype(np.float64)
            frame_db = 10.0 * np.log10(np.maximum(np.mean(frames**2, axis=1), 1e-24))
            silent_frames += int(np.count_nonzero(frame_db < cfg.silence_frame_dbfs))
    return AudioMeasures(
        sample_rate_hz=int(sr),
        n_channels=int(x2.shape[1]),
        duration_s=n / float(sr),
        peak_dbfs=_db(peak),
        rms_dbfs=_db(float(np.sqrt(sum_sq / n)) if n else 0.0),
        silence_fraction=silent_frames / n_frames if n_frames else 1.0,
        clipped_fraction=clipped / x2.size if n else 0.0,
    )


def declared_duration_s(data: bytes | str | Path) -> float | None:
    """Duration from the file's header (no decoding), or None when the header does not say."""
    try:
        src, container = _open(data)
        if container is None:
            info = sf.info(src)
            return info.frames / info.samplerate if info.samplerate and info.frames >= 0 else None
        import av  # start-up time: only corpora with such files load FFmpeg

        with av.open(src) as c:
            return c.duration / av.time_base if c.duration else None
    except Exception:  # noqa: BLE001 - an unreadable header is decided by the full decode in check()
        return None


def wav_declared_duration_s(head: bytes, size: int) -> float | None:
    """Duration a RIFF/WAVE file of ``size`` bytes declares, from its first bytes only (None: not a WAV, or
    its ``fmt``/``data`` chunks are not within ``head``).

    Why by hand: libsndfile given a truncated buffer counts the frames that are there, not the header's.
    This lets a member of a tar stream be judged too long before it is read into memory. The frames are
    the data chunk's size (or, for a streamed header with size 0 or 0xFFFFFFFF, the bytes that follow it)
    over the block alignment."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, rate, align = 12, 0, 0
    while offset + 8 <= len(head):
        chunk, n = head[offset:offset + 4], int.from_bytes(head[offset + 4:offset + 8], "little")
        if chunk == b"fmt " and offset + 24 <= len(head):
            rate = int.from_bytes(head[offset + 12:offset + 16], "little")
            align = int.from_bytes(head[offset + 20:offset + 22], "little")
        elif chunk == b"data":
            if not rate or not align:
                return None
            available = max(size - offset - 8, 0)
            data = available if n in (0, 0xFFFFFFFF) else min(n, available)
            return (data // align) / rate
        offset += 8 + n + (n & 1)
    return None


def too_long(declared_s: float | None, cfg: AudioCheckConfig = AudioCheckConfig()) -> str | None:
    """The ``too_long`` reason when a header's duration is past ``max_duration_s``, else None — the one
    place that decides it, for decoded bytes, files on disk and archive members judged by their head."""
    if declared_s is None or declared_s <= cfg.max_duration_s:
        return None
    return f"{declared_s:.0f} s > maximum {cfg.max_duration_s:g} s (not decoded)"


def check(data: bytes | str | Path, cfg: AudioCheckConfig = AudioCheckConfig()) -> AudioCheck:
    """Validate one recording. Never raises for bad audio: the problem becomes the reason."""
    return check_decoded(data, cfg)[0]


def check_decoded(data: bytes | str | Path, cfg: AudioCheckConfig = AudioCheckConfig()
                  ) -> tuple[AudioCheck, tuple[np.ndarray, int] | None]:
    """:func:`check`, and the decoded (samples, channels) array and its rate when it was decoded.

    Why: the inventory tags every ``ok`` recording's content right after checking it; decoding it a
    second time for that cost ~4% of the inventory."""
    if isinstance(data, (bytes, bytearray)) and len(data) == 0:
        return AudioCheck("unreadable", "empty file (0 bytes)"), None
    declared = declared_duration_s(data)
    reason = too_long(declared, cfg)
    if reason:
        return AudioCheck("too_long", reason, declared_s=declared), None
    try:
        x, sr = decode(data)
    except Exception as exc:  # libsndfile reports corrupt/truncated files with many error types
        msg = first_line(exc)
        msg = re.sub(r"^Error opening .*?: ", "", msg)  # drop the object repr (a memory address)
        msg = re.sub(r"^\[Errno -?\d+\] (.*?)(: '<none>')?$", r"\1", msg)  # FFmpeg's errno and empty file name
        return AudioCheck("unreadable", f"cannot decode audio: {msg}"), None
    if x.size and not np.all(np.isfinite(x)):
        return AudioCheck("unreadable", "audio contains NaN or infinite samples"), (x, sr)
    m = measure(x, sr, cfg)
    if x.shape[0] == 0:
        return AudioCheck("too_short", "empty: 0 samples", m), (x, sr)
    if m.duration_s < cfg.min_duration_s:
        return AudioCheck("too_short", f"{m.duration_s:.3f} s < minimum {cfg.min_duration_s:g} s", m), (x, sr)
    if m.peak_dbfs < cfg.silent_peak_dbfs:
        return AudioCheck("silent", f"peak {m.peak_dbfs:.1f} dBFS < {cfg.silent_peak_dbfs:g} dBFS", m), (x, sr)
    reason = ""
    if m.clipped_fraction > 0.001:
        reason = f"clipped: {100 * m.clipped_fraction:.2f}% of samples at full scale"
    return AudioCheck("ok", reason, m), (x, sr)


def read_files(sources: Iterable[str]) -> Iterator[SourceBytes]:
    """Bytes of plain file paths (``None`` for a file that is gone).

    The default reader of :func:`batched_waveforms`' callers; a corpus whose sources are not plain files
    (archive members) brings its own reader (``Adapter.read_sources``).
    """
    for src in sources:
        path = Path(src)
        if path.is_file():  # a folder name may itself contain '::'
            yield src, path.read_bytes()
            continue
        if "::" in src:
            raise ClinicalTransferError(f"source {src!r} is an archive member, not a file",
                                        "pass the corpus adapter's read_sources as the reader")
        yield src, None


def decode_plan(batch: int, on_device: bool) -> tuple[int, int]:
    """Clips per encoder call and decoding threads for :func:`batched_waveforms`.

    On a GPU: at least 256 clips a call (the encoder plans its own token-budget passes) decoded on up to 8
    threads while it works on the previous ones — it reads thousands of audio-seconds per second. On the
    CPU: ``batch`` clips, decoded inline (the encoder has the cores). One rule for scoring and dumps."""
    return (max(batch, 256), min(8, os.cpu_count() or 1)) if on_device else (batch, 1)


def batched_waveforms(items: Iterable[SourceBytes], sample_rate_hz: int, batch: int,
                      on_missing: Callable[[str], None] | None = None, threads: int = 1,
                      first: int | None = None) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Decode (source, bytes) pairs to mono float32 waveforms at ``sample_rate_hz`` and yield them in
    lists of up to ``batch`` (source, waveform) pairs, in the order the sources came.

    Why here: every encoder pass (activation dumps, scoring) reads audio the same way; where the bytes
    come from (files, archive members) is the corpus reader's business. Absent sources are reported
    through ``on_missing`` rather than dropped silently. ``threads`` > 1 decodes and resamples a batch
    on that many threads (libsndfile, FFmpeg and the resampler release the GIL): a GPU encoder reads
    thousands of audio-seconds per second, more than one core decodes. ``first``: size of the first
    batch (a small one lets the encoder start sooner).
    """
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def start(data):  # a future on the pool, or the waveform itself when decoding inline
        return pool.submit(load_mono, data, sample_rate_hz) if pool else load_mono(data, sample_rate_hz)

    def done(pending):
        return [(src, (job.result() if pool else job)[0]) for src, job in pending]

    size, pending = first or batch, []
    try:
        for src, data in items:
            if data is None:
                if on_missing is not None:
                    on_missing(src)
                continue
            pending.append((src, start(data)))
            if len(pending) >= size:
                yield done(pending)
                pending, size = [], batch
        if pending:
            yield done(pending)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
