"""SAE metrics against direct computations, and the TopK trainer on a planted dictionary."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.sae import SAEConfig, SparseAutoencoder
from clinical_transfer.sae.evaluate import StreamingEval, evaluate, write_eval
from clinical_transfer.sae.train import TrainConfig, atom_recovery, planted_dictionary, train_topk


def test_streaming_metrics_equal_direct_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, size=(1000, 12))
    x_hat = x + rng.normal(0, 0.7, size=x.shape)
    codes = torch.from_numpy((rng.random((1000, 40)) < 0.1).astype(np.float32))
    acc = StreamingEval(12, 40)
    for lo in range(0, 1000, 137):  # uneven batches
        acc.update(torch.from_numpy(x[lo:lo + 137]), torch.from_numpy(x_hat[lo:lo + 137]), codes[lo:lo + 137])
    s = acc.summary()
    fve = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    nl2 = np.mean(np.linalg.norm(x - x_hat, axis=1) / np.linalg.norm(x, axis=1))
    assert s.fve == pytest.approx(fve, abs=1e-10)
    assert s.normalized_l2 == pytest.approx(nl2, abs=1e-10)
    assert s.l0 == pytest.approx(codes.double().sum(1).mean().item(), abs=1e-10)
    assert s.dead_fraction == pytest.approx(float((codes.sum(0) == 0).float().mean()), abs=1e-12)
    # the pitfall: variance about zero would give a very different, inflated number here
    fve_about_zero = 1 - ((x - x_hat) ** 2).sum() / (x**2).sum()
    assert s.fve < 0.9 and fve_about_zero > 0.99  # about the mean ~0.88; about zero ~0.995


def test_fve_of_predicting_the_mean_is_zero_and_perfect_is_one():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(5, 1, size=(300, 8)))
    sae = SparseAutoencoder(SAEConfig(8, 16, "relu"), dtype=torch.float64)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))  # W_dec = 0: x_hat is the per-dimension mean
    s, density = evaluate(sae, x.split(64))
    assert s.fve == pytest.approx(0.0, abs=1e-12)
    assert s.dead_fraction == 1.0 and density.sum() == 0
    acc = StreamingEval(8, 16)
    acc.update(x, x, torch.zeros(300, 16))
    assert acc.summary().fve == 1.0 and acc.summary().normalized_l2 == 0.0


def test_write_eval_layout(tmp_path):
    acc = StreamingEval(4, 8)
    acc.update(torch.randn(20, 4), torch.randn(20, 4), torch.ones(20, 8))
    path = write_eval(acc.summary(), acc.density, tmp_path)
    assert path == tmp_path / "test_eval" / "summary.json"
    data = json.loads(path.read_text())
    assert {"fve", "normalized_l2", "l0", "dead_fraction", "n_tokens", "non_diagnostic"} <= set(data)
    assert (tmp_path / "test_eval" / "feature_density.png").stat().st_size > 1000


FAST = TrainConfig(expansion=4, k=4, batch_size=256, steps=600, lr=4e-3, dead_after_tokens=20_000, val_every=300,
                   log_every=100, checkpoint_every=10_000)


def test_planted_dictionary_is_recovered(tmp_path):
    x, D = planted_dictionary(12_000, 32, 64, 4, seed=0)
    sae = train_topk(x[:10_000], x[10_000:], tmp_path, FAST, progress=False)
    recovered = atom_recovery(sae, D, 0.9)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # measured: 63 of 64 planted atoms (0.984) at cosine > 0.9, held-out FVE 0.9125
    assert recovered >= 0.9, recovered
    assert summary["validation"]["fve"] > 0.9, summary["validation"]
    assert len((tmp_path / "train_metrics.jsonl").read_text().splitlines()) == 6
    assert len((tmp_path / "validation_metrics.jsonl").read_text().splitlines()) == 2


def test_training_is_deterministic_and_resumable(tmp_path):
    x, _ = planted_dictionary(3000, 16, 32, 3, seed=1)
    cfg = TrainConfig(expansion=4, k=3, batch_size=128, steps=60, lr=3e-3, dead_after_tokens=2000, val_every=1000,
                      log_every=20, checkpoint_every=1000)
    a = train_topk(x, None, tmp_path / "a", cfg, progress=False)
    b = train_topk(x, None, tmp_path / "b", cfg, progress=False)
    assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.b_dec, b.b_dec)
    train_topk(x, None, tmp_path / "c", cfg, progress=False, stop_after=25)  # "killed" after 25 steps
    assert not (tmp_path / "c" / "sae.pt").exists()
    c = train_topk(x, None, tmp_path / "c", cfg, progress=False)  # resumes from checkpoint.pt
    assert torch.equal(a.W_enc, c.W_enc) and torch.equal(a.W_dec, c.W_dec)
    assert (tmp_path / "a" / "train_metrics.jsonl").read_text() == (tmp_path / "c" / "train_metrics.jsonl").read_text()


def test_resume_refuses_other_settings_and_damaged_checkpoints(tmp_path):
    """A checkpoint made with another k (or width) must not be spliced into this run; more steps may be
    asked for (a run extended); a damaged checkpoint is one clear error."""
    x, _ = planted_dictionary(600, 16, 32, 3, seed=1)
    cfg = TrainConfig(expansion=4, k=3, batch_size=64, steps=20, lr=3e-3, val_every=1000, log_every=10,
                      checkpoint_every=1000)
    train_topk(x, None, tmp_path / "r", cfg, progress=False, stop_after=5)
    ckpt = tmp_path / "r" / "checkpoint.pt"
    with pytest.raises(ClinicalTransferError) as e:
        train_topk(x, None, tmp_path / "r", replace(cfg, k=4), progress=False)
    assert str(e.value).startswith(f"{ckpt} is from a run with other settings (k 3 -> 4); resuming would mix two "
                                   "trainings (only steps, log_every, val_every, checkpoint_every may change)")
    with pytest.raises(ClinicalTransferError, match=r"other settings \(d_in 16 -> 8\)"):
        train_topk(x[:, :8], None, tmp_path / "r", cfg, progress=False)
    train_topk(x, None, tmp_path / "r", replace(cfg, steps=30), progress=False)  # the run extended
    assert torch.load(ckpt, weights_only=True)["step"] == 30
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(ClinicalTransferError) as e:
        train_topk(x, None, tmp_path / "r", cfg, progress=False)
    assert str(e.value) == (f"the training checkpoint {ckpt} cannot be read (RuntimeError). "
                            f"Fix: start over with a new --out, or delete {ckpt}.")
