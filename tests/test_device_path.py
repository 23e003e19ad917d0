"""The accelerator path on CPU: on-device SAE + aggregation equal today's path byte for byte, cheap
identities that still notice one changed byte, and the background audio prefetch."""

import os
import time

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_transfer import hashing
from clinical_transfer.background import Prefetch
from clinical_transfer.sae import SAEConfig, SparseAutoencoder
from clinical_transfer.scoring import aggregate_codes, sae_hash, score_recordings
from clinical_transfer.store import aggregate
from tests.tiny_models import HostOnly


def _same(a, b):
    for name in ("features", "mean", "frac_active", "max", "frame_indices", "frame_values"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert a.n_frames == b.n_frames


@pytest.mark.parametrize("host_above", [4096, 10])  # 10: the 13- and 40-frame recordings go the host route
@pytest.mark.parametrize("keep_frames", [False, True])
def test_aggregate_codes_equals_numpy_aggregate_bytewise(keep_frames, host_above, monkeypatch):
    monkeypatch.setattr("clinical_transfer.scoring.HOST_AGGREGATE_FRAMES", host_above)
    rng = np.random.default_rng(0)
    lengths = [7, 0, 1, 40, 13]
    d_sae, k = 50, 6
    idx = torch.from_numpy(np.stack([rng.choice(d_sae, k, replace=False) for _ in range(sum(lengths))]))
    vals = torch.from_numpy(rng.gamma(1.0, 1.0, (sum(lengths), k)).astype(np.float32))
    vals[rng.random(vals.shape) < 0.2] = 0.0  # TopK slots ReLU'd to zero count as inactive
    vals[3, :] = vals[4, :] = 1.5  # exact ties
    got = aggregate_codes(idx, vals, lengths, d_sae, keep_frames)
    start = 0
    for T, g in zip(lengths, got):
        want = aggregate(idx[start : start + T].numpy(), vals[start : start + T].numpy(), d_sae, keep_frames)
        _same(g, want)
        start += T
    assert got[1].n_frames == 0 and len(got[1].features) == 0


def _tiny_sae(d, w, k, seed=0):
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d, w, "topk", k))
    with torch.no_grad():
        sae.W_enc.normal_(0, d**-0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    return sae.eval()


def test_on_device_scoring_store_equals_host_path(tiny_gemma_path, tmp_path):
    import soundfile as sf

    from clinical_transfer.encoders import get_encoder

    rng = np.random.default_rng(1)
    rows = []
    for i in range(9):
        p = tmp_path / "audio" / f"r{i}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, rng.normal(0, 0.1, 16000 // 4 + 331 * i).astype(np.float32), 16000)
        rows.append({"recording_id": f"r{i}", "participant_id": f"p{i // 2}", "segment_group": "sustained_vowel",
                     "recording_type": "vowel-a", "status": "ok", "source": str(p),
                     "audio_sha256": hashing.sha256_file(p)})
    table = pd.DataFrame(rows)
    enc = get_encoder("gemma", model=str(tiny_gemma_path), layer=2)
    enc.max_tokens = 256
    sae = _tiny_sae(32, 96, 8)
    for frames in (False, True):
        a = score_recordings(table, enc, sae, tmp_path / f"dev{frames}", tmp_path / f"c1{frames}", "salt", batch=4,
                             progress=False, frame_codes=frames)
        b = score_recordings(table, HostOnly(enc), sae, tmp_path / f"host{frames}", tmp_path / f"c2{frames}", "salt",
                             batch=4, progress=False, frame_codes=frames)
        assert a.encoded == b.encoded == 9
        assert set(a.seconds) == {"wait_audio", "encoder", "sae_aggregate", "cache_write", "wait_writer"}
        files = sorted(p.name for p in (tmp_path / f"dev{frames}").iterdir())
        assert "index.parquet" in files and len(files) > 3
        for f in files:  # index, aggregate arrays and manifest: byte for byte
            assert (tmp_path / f"dev{frames}" / f).read_bytes() == (tmp_path / f"host{frames}" / f).read_bytes(), f


@pytest.fixture(scope="module")
def tiny_gemma_path(tiny_gemma):
    return tiny_gemma[0]



def test_file_digest_remembers_and_still_sees_one_changed_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINICAL_TRANSFER_DIGEST_CACHE", str(tmp_path / "digests"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(os.urandom(1 << 16))
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(p) or real(p))
    first = hashing.file_digest(f)
    assert first == real(f) and len(calls) == 1
    assert hashing.file_digest(f) == first and len(calls) == 1  # remembered: no re-read
    time.sleep(0.01)
    os.utime(f)  # touch: re-read once, same digest
    assert hashing.file_digest(f) == first and len(calls) == 2
    data = bytearray(f.read_bytes())
    data[1234] ^= 1
    st = f.stat()
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime put back (ctime moves)
    assert hashing.file_digest(f) == real(f) != first


def test_encoder_id_is_cheap_and_changes_with_one_weight_byte(tiny_gemma_path, tmp_path, monkeypatch):
    import shutil

    from clinical_transfer.encoders import get_encoder

    monkeypatch.setenv("CLINICAL_TRANSFER_DIGEST_CACHE", str(tmp_path / "digests"))
    model = tmp_path / "model"
    shutil.copytree(tiny_gemma_path, model)
    a = get_encoder("gemma", model=str(model), layer=2).id()
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(p) or real(p))
    assert get_encoder("gemma", model=str(model), layer=2).id() == a and calls == []  # nothing re-read
    for f in model.glob("*"):
        os.utime(f)
    assert get_encoder("gemma", model=str(model), layer=2).id() == a  # touched, unchanged: same id
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    assert get_encoder("gemma", model=str(model), layer=2).id() != a


def test_checkpoint_sae_hash_is_remembered_and_equals_the_tensor_hash(tmp_path, monkeypatch):
    from clinical_transfer.run import models
    from clinical_transfer.sae.formats import load_sae, save_pt

    monkeypatch.setenv("CLINICAL_TRANSFER_DIGEST_CACHE", str(tmp_path / "digests"))
    path = save_pt(_tiny_sae(16, 48, 4), tmp_path / "sae.pt")
    sae = load_sae(path)
    assert models.checkpoint_sae_hash(path, None, sae) == sae_hash(sae)
    monkeypatch.setattr(models, "sae_hash", lambda s: pytest.fail("recomputed"))
    assert models.checkpoint_sae_hash(path, None, sae) == sae_hash(sae)
    other = save_pt(_tiny_sae(16, 48, 4, seed=1), tmp_path / "sae.pt")
    monkeypatch.undo()
    monkeypatch.setenv("CLINICAL_TRANSFER_DIGEST_CACHE", str(tmp_path / "digests"))
    assert models.checkpoint_sae_hash(other, None, load_sae(other)) == sae_hash(load_sae(other)) != sae_hash(sae)


def test_device_path_injected_failure_is_raised_and_resume_is_identical(tiny_gemma_path, tmp_path):
    """An error on the writer thread reaches the caller; a re-run resumes from the cache to the same store.

    Same values to float tolerance, not bytes: a transformer's states depend in the last bits on which
    clips share a pass (GEMM blocking differs with the row count), and a resumed run groups the rest
    differently. An uninterrupted re-run is byte-identical (test above).
    """
    import soundfile as sf

    from clinical_transfer.encoders import get_encoder

    rng = np.random.default_rng(2)
    rows = []
    for i in range(7):
        p = tmp_path / f"r{i}.wav"
        sf.write(p, rng.normal(0, 0.1, 4000 + 97 * i).astype(np.float32), 16000)
        rows.append({"recording_id": f"r{i}", "participant_id": f"p{i}", "segment_group": "cough",
                     "recording_type": "cough-heavy", "status": "ok", "source": str(p), "audio_sha256": hashing.sha256_file(p)})
    table = pd.DataFrame(rows)
    enc, sae = get_encoder("gemma", model=str(tiny_gemma_path), layer=2), _tiny_sae(32, 64, 4)
    with pytest.raises(RuntimeError, match="injected failure after 3"):
        score_recordings(table, enc, sae, tmp_path / "a", tmp_path / "cache", "s", batch=2, progress=False, fail_after=3)
    resumed = score_recordings(table, enc, sae, tmp_path / "a", tmp_path / "cache", "s", batch=2, progress=False)
    assert resumed.from_cache >= 3 and resumed.encoded + resumed.from_cache == 7
    score_recordings(table, enc, sae, tmp_path / "b", tmp_path / "cache2", "s", batch=2, progress=False)
    assert (tmp_path / "a" / "index.parquet").read_bytes() == (tmp_path / "b" / "index.parquet").read_bytes()
    for name in ("mean", "frac_active", "max"):
        np.testing.assert_allclose(np.load(tmp_path / "a" / f"{name}.npy"), np.load(tmp_path / "b" / f"{name}.npy"),
                                   rtol=1e-4, atol=1e-5)


def test_prefetch_keeps_order_and_reraises():
    assert list(Prefetch(iter(range(100)), depth=3)) == list(range(100))

    def boom():
        yield 1
        raise ValueError("decode failed")

    got = []
    with pytest.raises(ValueError, match="decode failed"):
        for x in Prefetch(boom()):
            got.append(x)
    assert got == [1]


def test_parallel_cached_inventory_equals_serial(demo_small, tmp_path, monkeypatch):
    """Process pool and audio-hash cache give the very table of today's serial inventory."""
    from dataset_adapters import inventory
    from dataset_adapters.coswara import CoswaraAdapter

    serial = CoswaraAdapter(demo_small, workers=1).recordings(progress=False)
    assert len(serial) >= inventory.Inspector.START_POOL_AT  # the pool really starts
    pooled = CoswaraAdapter(demo_small, workers=2, inspect_cache=tmp_path / "c").recordings(progress=False)
    pd.testing.assert_frame_equal(pooled, serial)
    n_cached = len(list((tmp_path / "c").rglob("*.json")))
    assert n_cached == serial["audio_sha256"].dropna().nunique() > 0  # one entry per distinct audio
    monkeypatch.setattr(inventory, "_inspect_job", lambda *a: pytest.fail("checked again despite the cache"))
    cached = CoswaraAdapter(demo_small, workers=2, inspect_cache=tmp_path / "c").recordings(progress=False)
    pd.testing.assert_frame_equal(cached, serial)


def test_sae_precision_is_part_of_the_cache_key(tiny_gemma_path, tmp_path):
    import soundfile as sf

    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.errors import ClinicalTransferError

    p = tmp_path / "r.wav"
    sf.write(p, np.random.default_rng(4).normal(0, 0.1, 6000).astype(np.float32), 16000)
    table = pd.DataFrame([{"recording_id": "r", "participant_id": "p", "segment_group": "cough",
                           "recording_type": "cough-heavy", "status": "ok", "source": str(p),
                           "audio_sha256": hashing.sha256_file(p)}])
    enc, sae = get_encoder("gemma", model=str(tiny_gemma_path), layer=2), _tiny_sae(32, 64, 4)
    a = score_recordings(table, enc, sae, tmp_path / "a", tmp_path / "c", "s", progress=False)
    b = score_recordings(table, enc, sae, tmp_path / "b", tmp_path / "c", "s", progress=False, sae_precision="bf16")
    assert (a.encoded, b.encoded, b.from_cache) == (1, 1, 0)  # bf16 codes never come from the fp32 cache
    import json

    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["sae_precision"] == "bf16"
    with pytest.raises(ClinicalTransferError, match="unknown SAE precision 'fp16'"):
        score_recordings(table, enc, sae, tmp_path / "x", tmp_path / "c", "s", progress=False, sae_precision="fp16")
    with pytest.raises(ClinicalTransferError, match="--sae-precision tf32 needs an encoder that keeps its states"):
        score_recordings(table, HostOnly(enc), sae, tmp_path / "y", tmp_path / "c", "s", progress=False,
                         sae_precision="tf32")


def test_compile_is_refused_for_other_encoders():
    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.run.models import resolve_models

    with pytest.raises(ClinicalTransferError, match="--compile is for the gemma encoder, not ge2e"):
        resolve_models("ge2e", 3, device="cpu", compile=True)


def test_devices_and_numeric_options_are_checked_when_parsed(monkeypatch, capsys):
    """cuda:N picks one GPU of several; one past the last, or any CUDA without a GPU, is one line; a
    negative count, a fraction past 1 or an unknown device is refused by the parser (they ran before)."""
    from clinical_transfer.cli import build_parser
    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.run.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [resolve_device(d) for d in ("auto", "cuda", "cuda:1", "cpu")] == ["cuda", "cuda", "cuda:1", "cpu"]
    with pytest.raises(ClinicalTransferError) as e:
        resolve_device("cuda:2")
    assert str(e.value) == ("--device cuda:2 was asked for but this machine has 2 CUDA device(s). "
                            "Fix: use cuda:0 ... cuda:1, or cuda.")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ClinicalTransferError, match="--device cuda:0 was asked for but no CUDA device is available"):
        resolve_device("cuda:0")
    parser = build_parser()
    assert parser.parse_args(["extract", "--device", "cuda:1", "--out", "o"]).device == "cuda:1"
    for argv, message in ((["extract", "--device", "gpu", "--out", "o"], "argument --device: 'gpu' is not a device: "
                                                                         "use auto, cpu, cuda or cuda:N"),
                          (["extract", "--batch", "0", "--out", "o"], "argument --batch: 0 is outside [1, inf)"),
                          (["demo-corpus", "d", "--participants", "-3"], "argument --participants: -3 is outside [1, inf)"),
                          (["demo-corpus", "d", "--duration-s", "0.1"], "argument --duration-s: 0.1 is outside [0.5, inf)"),
                          (["activations", "--heldout-fraction", "1", "--out", "o"],
                           "argument --heldout-fraction: 1 is outside [0, 1)"),
                          (["stats", "--features", "f", "--meta", "m", "--label", "l", "--out", "o", "--alpha", "0.6"],
                           "argument --alpha: 0.6 is outside (0, 0.5]"),
                          (["train-sae", "--activations", "a", "--out", "o", "--k", "two"], "argument --k: 'two' is not "
                                                                                          "an integer"),
                          (["stats", "--features", "f", "--meta", "m", "--label", "l", "--out", "o", "--min-cell", "3"],
                           "argument --min-cell: 3 is outside [10, inf)"),
                          (["audit", "run", "--min-cell", "2"], "argument --min-cell: 2 is outside [10, inf)")):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.rstrip().endswith(message)


def test_inventory_pool_failure_falls_back_to_serial_with_a_warning(demo_small, monkeypatch):
    """A dead worker (e.g. a calling script without a __main__ guard) costs speed, not rows."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from dataset_adapters import inventory
    from dataset_adapters.coswara import CoswaraAdapter

    class DeadPool:
        def submit(self, *a, **k):
            f = Future()
            f.set_exception(BrokenProcessPool("a worker died"))
            return f

        def shutdown(self, **k):
            pass

    serial = CoswaraAdapter(demo_small, workers=1).recordings(progress=False)
    monkeypatch.setattr(inventory, "_pool", lambda workers: DeadPool())
    with pytest.warns(UserWarning, match="the inventory's process pool failed"):
        fallback = CoswaraAdapter(demo_small, workers=2).recordings(progress=False)
    pd.testing.assert_frame_equal(fallback, serial)
