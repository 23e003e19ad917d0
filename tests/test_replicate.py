"""The transfer test: frozen demo overlay -> the site-B corpus (other people, CSV-manifest layout).

Planted truth: ``st`` changes voice quality in both corpora (its robust correlates must replicate far
above the null); ``asthma`` moves features in the demo corpus only through its sex and wave confounds,
and is independent of both at site B (features it moved there must not replicate).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from statsmodels.stats.multitest import multipletests

from clinical_transfer import guardrails
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.run.commands import DataOptions
from clinical_transfer.run.commands import replicate as run_replicate
from clinical_transfer.stats.replication import bh_rows, one_sided_p, replication_tables

FROZEN = Path(__file__).resolve().parent.parent / "reports" / "frozen" / "demo"


def test_bh_rows_equals_statsmodels_per_row():
    rng = np.random.default_rng(0)
    p = rng.random((50, 37)) ** 3
    p[:, 5] = p[:, 6]  # ties
    q = bh_rows(p)
    for row, qrow in zip(p, q):
        np.testing.assert_allclose(qrow, multipletests(row, method="fdr_bh")[1], rtol=0, atol=1e-15)


def test_one_sided_p_follows_the_original_direction():
    np.testing.assert_allclose(one_sided_p(np.array([0.02, 0.02, 1.0]), np.array([True, False, True])), [0.01, 0.99, 0.5])


def test_replication_tables_on_planted_numbers():
    """Original features 0-19 have real effects in the second corpus (same sign), 20-39 none; the null
    universe is 400 features of which 20 carry effects: rate 0.5 vs a null near 0.05."""
    rng = np.random.default_rng(1)
    names = [f"feature_{j:05d}" for j in range(400)]
    beta = rng.normal(0, 1, 400)
    p = rng.random(400)
    p[:20] = 1e-6  # planted: strong, in the original direction
    original = pd.DataFrame({"label": "x", "segment_group": "vowel", "feature": names[:40],
                             "beta_adj": np.sign(beta[:40]) * 0.5, "verdict": "robust correlate"})
    second = pd.DataFrame({"segment_group": "vowel", "feature": names, "beta_adj": beta, "se_adj": 0.1, "p_adj": p,
                           "verdict": "adjusted correlate", "n_participants_pos": 30, "n_participants_neg": 60})
    feats, fams = replication_tables(original, second, {}, draws=500, seed=0)
    fam = fams.iloc[0]
    assert fam["n_replicated"] == 20 and fam["replication_rate"] == 0.5
    assert fam["null_rate_mean"] < 0.12 and fam["p_vs_null"] < 0.01
    assert feats["replicated"].iloc[:20].all() and not feats["replicated"].iloc[20:].any()
    flipped = original.assign(beta_adj=-original["beta_adj"])  # the opposite direction: nothing replicates
    assert replication_tables(flipped, second, {}, draws=50)[1].iloc[0]["n_replicated"] == 0


@pytest.fixture(scope="module")
def site_b(tmp_path_factory):
    from dataset_adapters.demo import DemoConfig, write_site_b_corpus

    return write_site_b_corpus(tmp_path_factory.mktemp("siteb") / "corpus",
                               DemoConfig(n_participants=100, seed=1, duration_s=2.0, faults=False), progress=False)


def _replicate(site_b, out, label, verdicts=(), **kw):
    opts = DataOptions("manifest", str(site_b), None, False, None, "site-b-test-salt-0123456789")
    return run_replicate(opts, out, str(FROZEN), label, kw.get("column"), [], [], kw.get("group_map", {}),
                         list(verdicts), 300, None, kw.get("sae"), "cpu", False)


@pytest.mark.slow
def test_planted_effect_replicates_and_confound_only_does_not(site_b, tmp_path):
    st = _replicate(site_b, tmp_path / "st", "st")
    fams = st.families.set_index("segment_group")
    assert set(fams.index) == {"prompted_speech", "vowel"}  # where st's robust correlates are
    for g, row in fams.iterrows():  # measured: prompted speech 2 of 2, vowel 13 of 13 (embedded k=4 SAE)
        assert row["n_tested"] == row["n_features"] >= 2
        assert row["replication_rate"] >= 0.85, g  # measured 1.0 / 1.0 (null means 0.07 / 0.17)
        assert row["replication_rate"] > row["null_rate_95th"] and row["p_vs_null"] < 0.01, g  # p 0.003
    assert fams.loc["vowel", "spearman_rho"] > 0.9  # effect sizes carry over (0.99 over 13 features)
    asthma = _replicate(site_b, tmp_path / "asthma", "asthma", ["confound-explained"])
    fa = asthma.families
    assert set(fa["segment_group"]) == {"breath", "cough", "prompted_speech", "vowel"}
    assert (fa["replication_rate"] <= 0.05).all()  # measured 0 of 8, 9, 12, 29
    assert fa["n_replicated"].sum() / fa["n_tested"].sum() < 0.02
    for out in (tmp_path / "st", tmp_path / "asthma"):
        assert guardrails.audit_run(out) == []
        text = (out / "REPLICATION.md").read_text()
        assert text.startswith(f"> **{guardrails.BANNER}**") and "A failure to replicate is a result." in text
        assert (out / "replication_families.csv").read_text().startswith("# " + guardrails.BANNER)
    manifest, frozen = st.manifest, json.loads((FROZEN / "MANIFEST.json").read_text())
    assert manifest["identity_verified"] == {"encoder_id": frozen["inputs"]["encoder_id"],
                                             "sae_sha256": frozen["inputs"]["sae_sha256"]}
    assert manifest["corpus"]["name"] == "manifest" and manifest["confounds"] == ["age", "sex", "wave"]


def test_replicate_refuses_what_it_cannot_do(site_b, tmp_path):
    with pytest.raises(ClinicalTransferError, match="has no table for label 'smoker'") as e:
        _replicate(site_b, tmp_path / "x", "smoker")
    assert "asthma, covid_status, diabetes, st" in e.value.fix
    with pytest.raises(ClinicalTransferError, match="speech and cough/breath results are never pooled"):
        _replicate(site_b, tmp_path / "x", "st", group_map={"vowel": "cough"})
    with pytest.raises(ClinicalTransferError, match="no 'st' features with verdict tracks nothing"):
        _replicate(site_b, tmp_path / "x", "st", ["tracks nothing"])
    from clinical_transfer.sae.default import load_default_sae
    from clinical_transfer.sae.formats import save_pt

    other = load_default_sae()
    with torch.no_grad():
        other.W_enc[0, 0] += 1.0
    path = save_pt(other, tmp_path / "other_sae.pt")
    with pytest.raises(ClinicalTransferError, match="the SAE differs from the frozen overlay's"):
        _replicate(site_b, tmp_path / "x", "st", sae=str(path))
