"""Train -> save -> load -> eval on real GE2E states of the demo corpus, and the shipped default SAE."""

import json

import pytest

from clinical_transfer.cli import main
from clinical_transfer.sae.default import DEFAULT_DIR, load_default_sae


@pytest.fixture(scope="module")
def dump(tmp_path_factory, demo_small):
    out = tmp_path_factory.mktemp("acts")
    assert main(["activations", "--quiet", "--data-root", str(demo_small), "--salt", "test-salt-0123456789", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"] == "ge2e" and manifest["width"] == 256 and manifest["layer"] == 3
    assert manifest["n_recordings"]["train"] + manifest["n_recordings"]["heldout"] == 24 * 9 - 3
    return out


def test_train_save_load_eval(dump, tmp_path, capsys):
    sae_dir = tmp_path / "sae"
    assert main(["train-sae", "--quiet", "--activations", str(dump), "--out", str(sae_dir), "--expansion", "2",
                 "--k", "8", "--batch-size", "512", "--steps", "40", "--val-every", "20"]) == 0
    assert main(["eval-sae", "--sae", str(sae_dir / "sae.pt"), "--activations", str(dump),
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "test_eval" / "summary.json").read_text())
    assert f"FVE {summary['fve']:.4f}" in printed
    assert summary["l0"] == pytest.approx(8.0) and 0.3 < summary["fve"] < 1.0


def test_eval_refuses_an_sae_of_another_width(dump, tmp_path, capsys):
    from clinical_transfer.sae.formats import save_pt
    from tests.test_sae_model_formats import random_sae

    save_pt(random_sae(d_in=16), tmp_path / "small.pt")
    code = main(["eval-sae", "--sae", str(tmp_path / "small.pt"), "--activations", str(dump), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "reads width 16 but the encoder gives width 256" in err


def test_default_sae_ships_with_its_held_out_numbers():
    sae = load_default_sae()
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k, sae.cfg.architecture) == (256, 256, 4, "topk")
    summary = json.loads((DEFAULT_DIR / "summary.json").read_text())
    held = json.loads((DEFAULT_DIR / "test_eval" / "summary.json").read_text())
    assert summary["encoder"] == "ge2e" and summary["layer"] == 3
    assert held["fve"] > 0.8 and held["l0"] == pytest.approx(4.0)
