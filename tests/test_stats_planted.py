"""Planted effects: true effects found, confound-only effects explained away, clustering keeps the null honest."""

import numpy as np
import pandas as pd
import pytest

from clinical_transfer.stats import overlay
from clinical_transfer.stats.association import associate
from clinical_transfer.stats.design import Family, LabelSpec
from clinical_transfer.stats.robustness import matched_rows
from tests.stats_data import clustered_table


@pytest.fixture(scope="module")
def planted():
    # feat_0, feat_1: real effects of `st`; feat_2..feat_5: driven by sex only.
    return clustered_table(n_participants=400, m=40, seed=1, effect={0: 0.9, 1: 0.6},
                           sex_effect={2: 1.5, 3: 1.5, 4: 1.0, 5: 1.0})


def verdicts(res, group):
    fam = res.overlay[(res.overlay["segment_group"] == group) & (res.overlay["role"] == "target")]
    return fam.set_index("feature")["verdict"]


def test_true_effects_are_robust_and_nothing_else(planted):
    features, meta = planted
    res = overlay(features, meta, "st", ["sex", "age", "wave"], permutations=20, positive_controls=[])
    for group in ("vowel", "cough"):
        v = verdicts(res, group)
        assert v["feat_0"] == "robust correlate" and v["feat_1"] == "robust correlate"
        others = v.drop(["feat_0", "feat_1"])
        assert (others != "not significant").sum() <= 1  # BH at 5%: at most a stray false discovery
    row = res.overlay.set_index(["segment_group", "feature"]).loc[("vowel", "feat_0")]
    assert row["beta_adj"] == pytest.approx(0.9, abs=0.25)  # planted 0.9
    assert row["auroc"] > 0.6 and row["auroc_low"] < row["auroc"] < row["auroc_high"]
    assert row["n_strata"] >= 4 and row["n_strata_same_sign"] == row["n_strata"]
    assert row["p_matched"] < 0.05  # survives 1:1 matching within sex x wave x age band
    assert row["confirm_mixedlm_p"] < 1e-4 and row["confirm_logit_p"] < 1e-4
    assert bool(row["exceeds_maxt"])


def test_effect_modification_is_robust_with_a_note_and_a_one_stratum_effect_is_not():
    """feat_0: st effect 0.4 in men, 1.6 in women — Cochran's Q is far past any threshold, yet the effect is
    significant in the same direction in every stratum: a robust correlate whose note says its size differs
    (it was called unstable before). feat_1: an effect in one wave only — strata disagree, still unstable."""
    features, meta = clustered_table(n_participants=400, m=30, seed=4, effect={0: 0.4}, female_effect={0: 1.2},
                                     wave_effect={1: 1.6})
    res = overlay(features, meta, "st", ["sex", "age", "wave"], permutations=20, positive_controls=[])
    fam = res.overlay[(res.overlay["segment_group"] == "vowel") & (res.overlay["role"] == "target")].set_index("feature")
    mod = fam.loc["feat_0"]
    assert mod["heterogeneity_p"] < 1e-6 and mod["n_strata_significant"] == mod["n_strata"] >= 4
    assert mod["verdict"] == "robust correlate"
    assert mod["note"] == f"effect size differs across strata (Cochran's Q), significant in the same direction in all {int(mod['n_strata'])} (one-sided, each)"
    one = fam.loc["feat_1"]
    assert one["q_adj"] < 0.05 and one["n_strata_significant"] < one["n_strata"]
    assert one["verdict"] == "unstable across splits"
    assert (fam.drop(["feat_0", "feat_1"])["verdict"] == "robust correlate").sum() == 0


def test_null_features_are_never_robust_under_the_effect_modification_rule():
    """The exception for heterogeneity needs every stratum significant in one direction: under the null
    (features that depend on sex only, plus noise; 4 seeds x 30 features x 2 groups) nothing is robust."""
    robust = 0
    for seed in range(4):
        features, meta = clustered_table(n_participants=300, m=30, seed=10 + seed, sex_effect={0: 1.5, 1: 1.0})
        res = overlay(features, meta, "st", ["sex", "age", "wave"], permutations=20, positive_controls=[])
        robust += int((res.overlay["verdict"] == "robust correlate").sum())
    assert robust == 0


def test_confound_driven_features_are_confound_explained(planted):
    features, meta = planted
    res = overlay(features, meta, "asthma", ["sex", "age", "wave"], permutations=0, positive_controls=[])
    fam = res.overlay[res.overlay["segment_group"] == "vowel"].set_index("feature")
    sex_driven = ["feat_2", "feat_3", "feat_4", "feat_5"]
    assert (fam.loc[sex_driven, "q_raw"] < 0.05).all()  # significant before adjustment ...
    # ... explained after, where the adjusted 95% limit is below half the raw estimate (measured: 3 of 4 here;
    # feat_4's limit is 54% of its raw estimate, so it is called inconclusive rather than explained)
    v = fam.loc[sex_driven, "verdict"]
    assert (v == "confound-explained").sum() >= 3 and v.isin(["confound-explained", "inconclusive after adjustment"]).all()
    assert (fam.loc[sex_driven, "attenuation"] > 0.7).all() and (fam.loc[sex_driven, "q_change"] < 1e-6).all()
    assert not fam["verdict"].str.contains("correlate").any()


def test_positive_controls_are_run_the_same_way(planted):
    features, meta = planted
    res = overlay(features, meta, "st", ["sex", "age", "wave"], permutations=0)
    sex = res.overlay[(res.overlay["label"] == "sex") & (res.overlay["segment_group"] == "vowel")]
    # positive controls get the adjusted fit and splits only, so the ladder stops below robust and says why
    hits = sex[sex["verdict"] == "adjusted correlate, robustness untested"]
    assert {"feat_2", "feat_3", "feat_4", "feat_5"} <= set(hits["feature"]) and len(hits) <= 5
    assert hits["note"].str.contains("robustness untested: not run for positive controls").all()
    assert not (sex["verdict"] == "robust correlate").any()
    assert (sex["role"] == "positive_control").all() and sex["contrast"].iloc[0] == "female vs male"
    pc = res.controls[res.controls["kind"] == "positive_control"]
    assert set(pc["label"]) == {"sex", "age"}


def test_null_fdr_is_nominal_only_with_clustering():
    """4 recordings per participant, strong participant effect, participant-level label, no effect at all."""
    features, meta = clustered_table(n_participants=300, reps=4, m=300, seed=5, icc=0.8)
    x = meta["st"].to_numpy(float)
    F = features.drop(columns="recording_id").to_numpy()
    classical = associate(x, F, None, None)
    clustered = associate(x, F, None, meta["participant_id"].to_numpy())
    rate_classical = float((classical.p < 0.05).mean())
    rate_clustered = float((clustered.p < 0.05).mean())
    # measured: classical ≈ 0.2x (inflated ~4x), clustered ≈ 0.05 (nominal)
    assert rate_classical > 0.15, rate_classical
    assert 0.02 < rate_clustered < 0.09, rate_clustered


def test_small_families_are_suppressed_without_numbers():
    features, meta = clustered_table(n_participants=16, m=5)
    res = overlay(features, meta, "st", ["sex"], permutations=0, positive_controls=[], strict=False)
    assert (res.overlay["verdict"] == "suppressed").all()
    assert res.overlay["note"].iloc[0].startswith("suppressed (n<10)")
    assert res.overlay[["n_participants_pos", "beta_adj", "p_adj", "auroc"]].isna().all().all()


def test_matching_is_exact_one_to_one_and_deterministic(planted):
    features, meta = planted
    meta = meta[meta["segment_group"] == "vowel"].reset_index(drop=True)
    fam = Family("st", "True vs False", "vowel", True, np.arange(len(meta)), meta["st"].to_numpy(float), meta,
                 ["sex", "wave"])
    keep = matched_rows(fam, ["sex", "wave"], seed=0)
    kept = meta[keep]
    per = kept.groupby(["sex", "wave"])["st"].agg(["sum", "size"])
    assert (per["sum"] * 2 == per["size"]).all()  # as many positives as negatives in every stratum
    assert np.array_equal(keep, matched_rows(fam, ["sex", "wave"], seed=0))
    assert not np.array_equal(keep, matched_rows(fam, ["sex", "wave"], seed=1))


def test_contrast_values_with_wildcards():
    features, meta = clustered_table(n_participants=200, m=3, seed=2)
    meta["covid_status"] = np.where(meta["st"], "positive_mild", np.where(meta["age"] > 50, "healthy", "recovered_full"))
    res = overlay(features, meta, LabelSpec("covid_status", ("positive_*",), ("healthy",)), ["sex"],
                  permutations=0, positive_controls=[])
    assert res.overlay["contrast"].iloc[0] == "positive_* vs healthy"
    vowel = res.overlay[res.overlay["segment_group"] == "vowel"].iloc[0]
    assert vowel["n_participants_neg"] == meta[(meta["covid_status"] == "healthy")]["participant_id"].nunique()


def test_same_inputs_same_bytes(tmp_path, planted):
    features, meta = planted
    digests = []
    for k in range(2):
        res = overlay(features, meta, "st", ["sex", "age", "wave"], permutations=10, seed=3)
        res.write(tmp_path / f"run{k}")
        digests.append({p.name: p.read_bytes() for p in (tmp_path / f"run{k}").iterdir()})
    assert digests[0] == digests[1]
    assert pd.read_csv(tmp_path / "run0" / "overlay.csv", comment="#").shape[0] == len(res.overlay)
