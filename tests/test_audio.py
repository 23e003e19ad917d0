"""Audio validation: every failure becomes a status with a reason, never an exception."""

import io

import numpy as np
import pytest
import soundfile as sf

from clinical_transfer.audio import AudioCheckConfig, check, load_mono
from clinical_transfer.errors import ClinicalTransferError


def wav(y, sr=16000, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, np.asarray(y, np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone(seconds, sr=16000, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * 220 * t)


def test_ok_with_measures():
    r = check(wav(tone(1.0)))
    assert r.status == "ok" and r.reason == ""
    m = r.measures
    assert m.sample_rate_hz == 16000 and m.duration_s == pytest.approx(1.0)
    assert m.peak_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert m.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert m.silence_fraction == 0.0


def test_silent_too_short_empty_nan_corrupt_clipped():
    assert check(wav(np.zeros(16000))).status == "silent"
    assert check(wav(1e-4 * tone(1.0))).status == "silent"  # -80 dBFS peak
    short = check(wav(tone(0.2)))
    assert (short.status, short.reason) == ("too_short", "0.200 s < minimum 0.5 s")
    assert check(wav(np.zeros(0))).reason == "empty: 0 samples"
    nan = tone(1.0)
    nan[100] = np.nan
    assert check(wav(nan, subtype="FLOAT")).reason == "audio contains NaN or infinite samples"
    bad = check(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert bad.status == "unreadable" and bad.reason.startswith("cannot decode audio:")
    assert "0x" not in bad.reason  # no memory addresses: reasons are deterministic
    clipped = check(wav(np.clip(3 * tone(1.0), -1, 1)))
    assert clipped.status == "ok" and clipped.reason.startswith("clipped: ")


def test_threshold_config_is_used():
    assert check(wav(tone(0.3)), AudioCheckConfig(min_duration_s=0.25)).status == "ok"


def test_load_mono_resamples_48k_to_16k(tmp_path):
    sr = 48000
    stereo = np.stack([tone(1.0, sr), tone(1.0, sr)], axis=1)
    p = tmp_path / "x.wav"
    sf.write(p, stereo, sr)
    y, out_sr = load_mono(p, 16000)
    assert out_sr == 16000 and len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == 220  # 1 Hz bins: the 220 Hz tone survived resampling


@pytest.mark.parametrize("sr_in", [48000, 44100, 22050, 8000, 16001])
def test_resample_equals_librosa_soxr_hq_byte_for_byte(sr_in):
    """audio.resample calls soxr itself (librosa's import costs seconds); the samples must stay librosa's."""
    import librosa

    from clinical_transfer.audio import resample

    rng = np.random.default_rng(sr_in)
    for n in (1, 7, 160, 3 * sr_in + 17):
        for dtype in (np.float32, np.float64):
            y = rng.normal(0, 0.1, n).astype(dtype)
            ref = librosa.resample(y, orig_sr=sr_in, target_sr=16000).astype(np.float32)
            got = resample(y, sr_in, 16000)
            assert got.dtype == np.float32 and got.shape == ref.shape and got.tobytes() == ref.tobytes(), (n, dtype)


def test_resample_refuses_non_finite_audio_in_one_line():
    from clinical_transfer.audio import resample

    with pytest.raises(ClinicalTransferError, match=r"^audio contains NaN or infinite samples\. Fix: the inventory marks such files unreadable: re-run the inventory\.$"):
        resample(np.array([0.0, np.nan, 0.1], np.float32), 48000, 16000)


def test_threaded_decoding_gives_the_serial_batches():
    from clinical_transfer.audio import batched_waveforms

    rng = np.random.default_rng(5)
    items = []
    for i in range(11):
        buf = io.BytesIO()
        sf.write(buf, rng.normal(0, 0.1, 22050 + 1000 * i).astype(np.float32), 22050, format="WAV")
        items.append((f"s{i}", buf.getvalue() if i != 4 else None))
    missing_a, missing_b = [], []
    a = list(batched_waveforms(iter(items), 16000, 3, missing_a.append))
    b = list(batched_waveforms(iter(items), 16000, 3, missing_b.append, threads=4))
    assert missing_a == missing_b == ["s4"]
    assert [[s for s, _ in batch] for batch in a] == [[s for s, _ in batch] for batch in b]
    assert all(x.tobytes() == y.tobytes() for ba, bb in zip(a, b) for (_, x), (_, y) in zip(ba, bb))


def test_check_decoded_is_check_plus_the_decoded_samples():
    """The inventory tags a recording from the samples its check decoded (one decode, not two)."""
    from clinical_transfer.audio import check_decoded, decode

    for data in (wav(tone(1.0)), wav(tone(0.2)), wav(np.zeros(16000, np.float32)), b"", b"not audio at all"):
        result, decoded = check_decoded(data)
        assert result == check(data)
        if decoded is None:
            assert result.status == "unreadable"
        else:
            x, sr = decode(data)
            assert decoded[1] == sr and decoded[0].tobytes() == x.tobytes()
