"""The corpus-fit SAE (#13 part 1-2): label-blind splits, no dictionary participant in any overlay, held-out
quality in the report, cached by content address, and seed stability by matched decoder directions."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_transfer.cli import run_overlay_main
from clinical_transfer.run import fit_sae
from clinical_transfer.run.config import SAEFitConfig
from clinical_transfer.run.fit_sae import split_participants
from clinical_transfer.sae.model import SAEConfig, SparseAutoencoder
from clinical_transfer.sae.stability import decoder_stability, matched_cosines
from tests.conftest import run_demo

CONFIG = """
[guardrails]
salt = "fit-test-salt-0123456789"
[demo]
n_participants = 40
duration_s = 1.5
[encoder]
sae = "fit"
[sae_fit]
steps = 40
seeds = 2
[analysis]
confounds = ["age", "sex"]
permutations = 0
strata = ["sex"]
min_stratum = 10
segment_groups = ["vowel", "cough"]
[[analysis.labels]]
column = "st"
missing_as = "False"
"""


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    return root, run_demo(root, CONFIG)


def test_split_is_stable_disjoint_and_label_blind():
    ids = pd.Series([f"id{i:04d}" for i in range(2000)])
    roles = split_participants(ids, SAEFitConfig(), seed=0)
    share = pd.Series(roles).value_counts(normalize=True)
    assert share["dictionary"] == pytest.approx(0.25, abs=0.03) and share["quality"] == pytest.approx(0.15, abs=0.03)
    assert split_participants(ids.sample(frac=1, random_state=1), SAEFitConfig(), seed=0) == roles  # row order
    assert split_participants(ids, SAEFitConfig(), seed=1) != roles
    everyone = split_participants(ids, SAEFitConfig(fit_on="all"), seed=0)
    assert set(everyone.values()) == {"dictionary", "quality"}


def test_no_dictionary_participant_is_analysed_and_the_report_says_how_the_sae_was_made(fit_run):
    root, out = fit_run
    manifest = json.loads((out / "run_manifest.json").read_text())
    fit = manifest["sae_fit"]
    assert fit["fit_on"] == "split" and fit["heldout_unit"] == "participant" and fit["seeds"] == 2
    assert fit["n_dictionary"] >= 5 and fit["n_quality"] >= 2
    assert fit["n_analysed"] == 40 - fit["n_dictionary"]
    design = pd.read_parquet(out / "overlays" / "st" / "controls.parquet")
    design = design[(design["kind"] == "design") & (design["role"] == "target")]
    assert (design["n_participants"] <= fit["n_analysed"]).all() and len(design) == 2
    inclusion = pd.read_csv(out / "overlays" / "st" / "overlay.csv", comment="#", low_memory=False)
    assert (inclusion["n_participants"].dropna() <= fit["n_analysed"]).all()
    assert "stability" in inclusion.columns and inclusion["stability"].between(0, 1).all()
    report = (out / "REPORT.md").read_text()
    assert "### The SAE (fit to this corpus, label-blind)" in report
    assert f"dictionary {fit['n_dictionary']} (left out of every overlay)" in report
    assert "held-out quality" in report and "the embedded demo SAE on the same held-out frames" in report
    assert "seed stability over 2 seeds" in report


def test_a_second_run_trains_nothing(fit_run, monkeypatch):
    root, out = fit_run

    def refuse(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(fit_sae, "train_topk", refuse)
    monkeypatch.setattr(fit_sae, "dump_activations", refuse)
    assert run_overlay_main(["--demo", "--quiet", "--config", str(root / "config.toml"), "--out", str(out),
                             "--overwrite"]) == 0


def test_the_fit_reads_no_label(fit_run):
    """Relabelling every participant changes nothing the SAE saw: the content address is the same."""
    root, out = fit_run
    from clinical_transfer.run.config import load_config
    from dataset_adapters import get_adapter

    corpus = out.with_name(out.name + "_corpus")
    recs = get_adapter("coswara", corpus).recordings(tag=False, progress=False)
    sfc = load_config(root / "config.toml").sae_fit
    from clinical_transfer.encoders import get_encoder

    enc = get_encoder("ge2e", layer=3)
    a = fit_sae.fit_corpus_sae(recs, enc, get_adapter("coswara", corpus).read_sources, out.parent / ".sae_cache",
                               sfc, 0, progress=False)
    flipped = recs.assign(st=~recs["st"].fillna(False).astype(bool), covid_status="healthy")
    b = fit_sae.fit_corpus_sae(flipped, enc, get_adapter("coswara", corpus).read_sources, out.parent / ".sae_cache",
                               sfc, 0, progress=False)
    assert a.key == b.key and a.dictionary == b.dictionary
    assert torch.equal(a.sae.W_dec, b.sae.W_dec)


def sae_with(W):
    s = SparseAutoencoder(SAEConfig(W.shape[1], W.shape[0], "topk", 4))
    with torch.no_grad():
        s.W_dec.copy_(torch.as_tensor(W, dtype=torch.float32))
    return s


def test_stability_matches_permuted_dictionaries_one_to_one():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(64, 16))
    perm = rng.permutation(64)
    assert np.allclose(matched_cosines(W, 3.0 * W[perm]), 1.0)  # order and scale do not matter
    half = W.copy()
    half[:32] = rng.normal(size=(32, 16))  # half the features are new in the other seed
    st = decoder_stability(sae_with(W), [sae_with(half[perm])])
    assert (st[32:] > 0.999).all() and np.median(st[:32]) < 0.8
    # one-to-one: two identical features in the reference cannot both claim the same match
    dup = np.vstack([W[:1], W[:1]])
    assert sorted(matched_cosines(dup, W[:2])) [0] < 0.99
    assert np.isnan(decoder_stability(sae_with(W), [])).all()


def test_sae_fit_outside_run_overlay_is_one_clear_error():
    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.run.models import resolve_models

    with pytest.raises(ClinicalTransferError, match="--sae fit fits an SAE inside run-overlay"):
        resolve_models("ge2e", 3, sae="fit", device="cpu")
    assert resolve_models("ge2e", 3, sae="embedded", device="cpu").sae_name == "embedded default SAE (demo artifact)"


def test_a_reused_output_folder_keeps_nothing_of_the_earlier_run(fit_run):
    """#12 item 4: a non-empty output folder is refused; with --overwrite nothing of the earlier run is left."""
    root, out = fit_run
    (out / "overlays" / "old_label").mkdir(parents=True, exist_ok=True)
    (out / "overlays" / "old_label" / "overlay.csv").write_text("stale")
    (out / "evidence" / "old_label").mkdir(parents=True, exist_ok=True)
    assert run_overlay_main(["--demo", "--quiet", "--config", str(root / "config.toml"), "--out", str(out)]) == 2
    assert (out / "overlays" / "old_label").exists()  # refused: nothing touched
    assert run_overlay_main(["--demo", "--quiet", "--config", str(root / "config.toml"), "--out", str(out),
                             "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["st"]
    assert not (out / "evidence" / "old_label").exists()


def test_top_frames_are_pictures_only_for_the_demo_and_private_offsets_for_a_real_corpus(fit_run, tmp_path):
    """#13 part 3: the demo gets thumbnails (PNG marked synthetic); the same corpus read as a real one gets
    pseudonymous recording ids + time offsets in the private folder and no picture anywhere in the output;
    the audit refuses a picture of audio in a run that is not on the demo corpus."""
    import shutil

    from clinical_transfer.guardrails import audit_run

    root, out = fit_run
    thumbs = sorted((out / "evidence").rglob("top_frames.png"))
    assert thumbs and audit_run(out) == []
    assert "top_frames.png" in (out / "REPORT.md").read_text()
    real = root / "real"
    corpus = out.with_name(out.name + "_corpus")
    assert run_overlay_main(["--dataset", "coswara", "--data-root", str(corpus), "--quiet",
                             "--config", str(root / "config.toml"), "--out", str(real)]) == 0
    assert not list(real.rglob("top_frames.png"))
    private = pd.read_csv(real.with_name("real_private") / "evidence_top_frames.csv", comment="#")
    assert len(private) > 0 and private["recording_id"].str.startswith("r").all()
    assert private["offset_s"].between(0, 1.5).all() and (private["activation"] > 0).all()
    assert "only pseudonymous recording ids and time offsets were written" in (real / "REPORT.md").read_text()
    assert audit_run(real) == []
    # a thumbnail copied into the real run, and the demo run's manifest without its demo flag: both caught
    shutil.copy(thumbs[0], real / "evidence" / "top_frames.png")
    assert any("a picture of audio in a run that is not on the synthetic demo corpus" in p for p in audit_run(real))
    copy = tmp_path / "demo_copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "run_manifest.json").read_text())
    manifest["demo"] = None
    (copy / "run_manifest.json").write_text(json.dumps(manifest))
    problems = audit_run(copy)
    assert len(problems) == len(thumbs) and all("picture of audio" in p for p in problems)
