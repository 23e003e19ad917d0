"""Scoring runner: cache, resume after a crash, shards == unsharded, the real 48 kHz sample, no network."""

import socket

import numpy as np
import pytest
import torch

from clinical_transfer.cli import main
from clinical_transfer.encoders import get_encoder
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.sae.default import load_default_sae
from clinical_transfer.scoring import score_recordings
from clinical_transfer.store import ScoreStore, aggregate, merge_stores
from tests.conftest import SAMPLE


def tree(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def parts():
    return get_encoder("ge2e", layer=3), load_default_sae()


@pytest.fixture(scope="module")
def full(tmp_path_factory, demo_small_recordings, parts):
    out = tmp_path_factory.mktemp("full")
    summary = score_recordings(demo_small_recordings, *parts, out / "store", out / "cache", "salt", progress=False)
    return out, summary


def test_store_contents_and_second_run_does_no_encoder_work(full, demo_small_recordings, parts, tmp_path):
    out, summary = full
    assert summary.scored == 24 * 9 - 3 and summary.encoded == summary.scored
    assert summary.skipped == {"missing": 1, "silent": 1, "unreadable": 1}
    store = ScoreStore(out / "store")
    mean = store.matrix("mean")
    assert mean.shape == (213, 256)
    assert (np.diff(mean.indptr) > 0).all() and store.index["recording_id"].is_monotonic_increasing
    assert store.index["recording_id"].str.match(r"^r_[0-9a-f]{12}$").all()
    frac = store.matrix("frac_active")
    assert np.allclose(frac.sum(axis=1), 4.0)  # TopK: k = 4 active features per frame
    again = score_recordings(demo_small_recordings, *parts, tmp_path / "again", out / "cache", "salt", progress=False)
    assert again.encoded == 0 and again.from_cache == 213
    assert tree(tmp_path / "again") == tree(out / "store")


def test_resume_after_injected_failure_is_byte_identical(full, demo_small_recordings, parts, tmp_path):
    with pytest.raises(RuntimeError, match="injected failure after 40"):
        score_recordings(demo_small_recordings, *parts, tmp_path / "s", tmp_path / "c", "salt", progress=False,
                         fail_after=40)
    resumed = score_recordings(demo_small_recordings, *parts, tmp_path / "s", tmp_path / "c", "salt", progress=False)
    assert resumed.from_cache >= 40 and resumed.encoded == 213 - resumed.from_cache
    assert tree(tmp_path / "s") == tree(full[0] / "store")


def test_two_shards_merged_equal_the_unsharded_run(full, demo_small_recordings, parts, tmp_path):
    for i in (0, 1):
        score_recordings(demo_small_recordings, *parts, tmp_path / f"s{i}", full[0] / "cache", "salt", (i, 2),
                         progress=False)
    sizes = [len(ScoreStore(tmp_path / f"s{i}").index) for i in (0, 1)]
    assert sum(sizes) == 213 and min(sizes) > 50
    merge_stores([tmp_path / "s1", tmp_path / "s0"], tmp_path / "merged")
    assert tree(tmp_path / "merged") == tree(full[0] / "store")
    with pytest.raises(ClinicalTransferError, match=r"shard\(s\) 1/2 missing"):
        merge_stores([tmp_path / "s0"], tmp_path / "bad")
    with pytest.raises(ClinicalTransferError, match=r"shard\(s\) 0/2 given more than once"):
        merge_stores([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1"], tmp_path / "bad")


def test_frame_level_codes_in_compact_dtypes(demo_small_recordings, parts, tmp_path):
    few = demo_small_recordings[demo_small_recordings["participant_id"] == demo_small_recordings["participant_id"].iloc[0]]
    score_recordings(few, *parts, tmp_path / "s", tmp_path / "c", "salt", progress=False, frame_codes=True)
    store = ScoreStore(tmp_path / "s")
    ids, vals = store.frame_codes(0)
    assert ids.dtype == np.uint16 and vals.dtype == np.float16
    assert ids.shape == (store.index["n_frames"].iloc[0], 4)
    mean = store.matrix("mean")[0].toarray().ravel()
    rebuilt = np.bincount(ids.ravel().astype(int), weights=vals.ravel().astype(float), minlength=256) / len(ids)
    assert np.allclose(rebuilt, mean, rtol=2e-3, atol=1e-3)  # float16 storage


def test_aggregates_by_hand():
    idx = np.array([[0, 2], [2, 3], [0, 2]])
    val = np.array([[1.0, 2.0], [4.0, 0.0], [3.0, 1.0]])  # feature 3 appears with value 0: not active
    s = aggregate(idx, val, 5)
    assert s.features.tolist() == [0, 2] and s.n_frames == 3
    assert np.allclose(s.mean, [4 / 3, 7 / 3]) and np.allclose(s.frac_active, [2 / 3, 1.0])
    assert np.allclose(s.max, [3.0, 4.0])


def test_real_48k_sample_all_eight_scored(coswara_dir, tmp_path, capsys):
    out = tmp_path / "store"
    code = main(["extract", "--quiet", "--data-root", str(SAMPLE), "--metadata-root", str(coswara_dir),
                 "--only-with-audio", "--salt", "test-salt-0123456789", "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "scored 8 recordings (8 encoded, 0 from cache" in capsys.readouterr().out
    store = ScoreStore(out)
    frames = dict(zip(store.index["recording_type"], store.index["n_frames"]))
    # 48 kHz resampled to 16 kHz: 1 + samples_16k // 160 frames at 100 frames/s
    assert frames["counting-normal"] == 1 + int(round(10.581333 * 16000)) // 160
    assert frames["vowel-o"] == 1 + int(round(2.730667 * 16000)) // 160


def test_default_encoder_runs_without_network_and_repeats_exactly(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    enc = get_encoder("ge2e", layer=2)
    y = np.random.default_rng(0).normal(0, 0.1, 40000).astype(np.float32)
    a, b = enc.hidden_states([y]), enc.hidden_states([y])
    assert a[0].shape == (251, 256) and torch.equal(a[0], b[0])


def test_shard_and_device_errors(tmp_path, capsys):
    code = main(["extract", "--data-root", str(tmp_path), "--salt", "test-salt-0123456789", "--shard", "2/2", "--out", str(tmp_path / "o")])
    assert code == 2 and "--shard 2/2 does not exist" in capsys.readouterr().err
