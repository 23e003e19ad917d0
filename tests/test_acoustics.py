"""The acoustic baseline (#13 part 4): eGeMAPS descriptors through the same statistics, and SAE overlays
re-run with the top eGeMAPS components as confounds, reported side by side."""

import numpy as np
import pandas as pd
import pytest

from clinical_transfer.acoustics import acoustic_components, descriptor_group
from clinical_transfer.errors import ClinicalTransferError
from tests.conftest import run_demo

CONFIG = """
[guardrails]
salt = "eg-test-salt-0123456789"
[demo]
n_participants = 60
duration_s = 1.5
[encoder]
name = "{encoder}"
[analysis]
confounds = ["age", "sex"]
permutations = 100
strata = ["sex"]
min_stratum = 10
adjust_acoustic = {k}
segment_groups = ["vowel", "cough"]
[[analysis.labels]]
column = "st"
missing_as = "False"
[[analysis.labels]]
column = "diabetes"
missing_as = "False"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("acoustic")
    egemaps = run_demo(root, CONFIG.format(encoder="egemaps", k=0), "egemaps")
    adjusted = run_demo(root, CONFIG.format(encoder="ge2e", k=5), "adjusted")  # reuses the descriptor cache
    return egemaps, adjusted


def table(out, label):
    t = pd.read_csv(out / "overlays" / label / "overlay.csv", comment="#", low_memory=False)
    return t[t["role"] == "target"]


def test_egemaps_finds_the_planted_voice_quality_effect_and_nothing_for_the_null_label(runs):
    egemaps, _ = runs
    st = table(egemaps, "st")
    assert st["feature"].str.startswith("egemaps_").all() and st["feature"].nunique() == 88
    assert (st["feature"].map(descriptor_group) != "other").all()  # every descriptor has its eGeMAPS group
    hits = st[st["verdict"].str.contains("correlate") | (st["verdict"] == "tracks nuisance")]
    assert set(hits["segment_group"]) == {"vowel"}  # planted in voiced tasks only
    vq = hits["feature"].str.contains("jitter|shimmer|HNR|H1-H2|H1-A3")
    assert vq.sum() >= 3, hits["feature"].tolist()  # measured: 7 (jitter, 2 shimmer, HNR, H1-H2, 2 H1-A3) of 62
    assert not table(egemaps, "diabetes")["verdict"].str.contains("correlate").any()
    report = (egemaps / "REPORT.md").read_text()
    assert "none: 88 named eGeMAPS descriptors per recording" in report


def test_acoustic_adjustment_changes_the_sae_verdicts_and_the_report_shows_both(runs):
    _, adjusted = runs
    plain, acoustic = table(adjusted, "st"), table(adjusted, "st+acoustic5")
    def significant(t):  # every rung above "not significant" that needs a significant adjusted association
        return (t["verdict"].str.contains("correlate") | t["verdict"].isin(["tracks nuisance", "unstable across splits"])).sum()

    n_plain, n_acoustic = significant(plain), significant(acoustic)
    # measured (60 participants, k=4 embedded SAE): 38 -> 31 adjusted-significant `st` features; the ones that
    # track loudness/silence fall 20 -> 10 (the eGeMAPS components carry loudness), correlates 18 -> 21
    assert n_plain > 0 and n_acoustic < n_plain
    nuisance = [(t["verdict"] == "tracks nuisance").sum() for t in (plain, acoustic)]
    assert nuisance[1] < nuisance[0]
    report = (adjusted / "REPORT.md").read_text()
    assert "## SAE correlates beyond plain acoustics" in report
    assert "| st | vowel | confounds + acoustic components |" in report


def test_components_are_fit_per_segment_group_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    X[:, 1] = 2 * X[:, 0] + 0.1 * rng.normal(size=60)
    t = pd.DataFrame(X, columns=[f"egemaps_{i}" for i in range(5)])
    t.insert(0, "recording_id", [f"r{i}" for i in range(60)])
    groups = pd.Series(["vowel"] * 30 + ["cough"] * 30)
    pcs = acoustic_components(t, groups, 2)
    assert list(pcs.columns) == ["acoustic_pc1", "acoustic_pc2"] and pcs.notna().all().all()
    again = acoustic_components(t.iloc[::-1].reset_index(drop=True), groups.iloc[::-1].reset_index(drop=True), 2)
    np.testing.assert_allclose(pcs.to_numpy(), again.iloc[::-1].to_numpy(), atol=1e-10)  # order-free, same sign
    for g in ("vowel", "cough"):
        assert abs(np.corrcoef(pcs.loc[groups == g, "acoustic_pc1"], X[(groups == g).to_numpy(), 0])[0, 1]) > 0.9


def test_egemaps_is_not_a_frame_encoder():
    from clinical_transfer.encoders import get_encoder

    with pytest.raises(ClinicalTransferError, match="'egemaps' is a set of per-recording descriptors"):
        get_encoder("egemaps")


def test_evidence_packets_are_written_and_the_audit_catches_each_planted_violation(runs, tmp_path):
    import json
    import shutil

    from clinical_transfer.guardrails import audit_run

    _, adjusted = runs
    packets = sorted((adjusted / "evidence" / "st" / "vowel").glob("feature_*.json"))
    assert len(packets) >= 5 and audit_run(adjusted) == []
    p = json.loads(packets[0].read_text())
    assert {"activation_density_by_segment_group", "participant_activation_cells", "acoustic_descriptors_top5",
            "nuisance_spearman", "decoder_norm", "stability"} <= set(p)
    assert all(c["suppressed"] or c["n_participants"] >= 10 for c in p["participant_activation_cells"])
    plants = {
        "a cell reports n_participants 4 < 10 without suppression":
            lambda d: d["participant_activation_cells"].append({"n_participants": 4, "mean_activation": 0.1}),
        "feature label reads like a diagnosis": lambda d: d.update(feature_label="covid detector"),
        "audio-like field 'spectrogram'": lambda d: d.update(spectrogram=[[0.0] * 80] * 3 + [0.0] * 80),
        "the non-diagnostic label is missing": lambda d: d.pop("non_diagnostic"),
    }
    for i, (message, plant) in enumerate(plants.items()):
        copy = tmp_path / f"run{i}"
        shutil.copytree(adjusted, copy)
        target = copy / packets[0].relative_to(adjusted)
        d = json.loads(target.read_text())
        plant(d)
        target.write_text(json.dumps(d))
        problems = audit_run(copy)
        assert len(problems) == 1 and message in problems[0], (message, problems)


def test_partial_spearman_ranks_what_a_feature_tracks_beyond_the_confounds():
    """A feature driven by sex (adjusted for) and by a voice-quality dimension: the plain Spearman names the
    F0 descriptor, the partial one (ranks residualised on the confounds) the voice-quality descriptor; the
    partial rho equals the Pearson correlation of statsmodels OLS residuals of the ranks."""
    import statsmodels.api as sm
    from scipy.stats import rankdata

    from clinical_transfer.run.evidence import descriptor_associations

    rng = np.random.default_rng(0)
    n = 200
    sex = rng.integers(0, 2, n).astype(float)
    vq = rng.normal(size=n)
    v = 3 * sex + vq + 0.3 * rng.normal(size=n)
    desc = pd.DataFrame({"egemaps_F0semitoneFrom27.5Hz_sma3nz_amean": 5 * sex + 0.2 * rng.normal(size=n),
                         "egemaps_jitterLocal_sma3nz_amean": vq + 0.3 * rng.normal(size=n),
                         "egemaps_loudness_sma3_amean": rng.normal(size=n)})
    desc["egemaps_shimmerLocaldB_sma3nz_amean"] = desc["egemaps_jitterLocal_sma3nz_amean"]
    desc.loc[0, "egemaps_shimmerLocaldB_sma3nz_amean"] = np.nan  # a missing value: its own complete-case pass
    rows = descriptor_associations(v, desc, (sex - sex.mean())[:, None], min_n=10)
    shimmer = next(r for r in rows if r["descriptor"].startswith("shimmer"))
    X1 = sm.add_constant(sex[1:])
    a1 = sm.OLS(rankdata(v[1:]), X1).fit().resid
    b1 = sm.OLS(rankdata(desc["egemaps_jitterLocal_sma3nz_amean"][1:]), X1).fit().resid
    assert shimmer["n_participants"] == n - 1
    assert shimmer["partial_spearman_rho"] == pytest.approx(np.corrcoef(a1, b1)[0, 1], abs=1e-6)
    rows = [r for r in rows if r is not shimmer]
    assert max(rows, key=lambda r: abs(r["spearman_rho"]))["descriptor"].startswith("F0semitone")
    top = rows[0]
    assert top["descriptor"] == "jitterLocal_sma3nz_amean" and top["group"] == "voice quality"
    X = sm.add_constant(sex)
    a = sm.OLS(rankdata(v), X).fit().resid
    b = sm.OLS(rankdata(desc["egemaps_jitterLocal_sma3nz_amean"]), X).fit().resid
    assert top["partial_spearman_rho"] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-6)
    assert top["ci_low"] < top["partial_spearman_rho"] < top["ci_high"] and top["n_controls"] == 1
    assert abs(rows[-1]["partial_spearman_rho"]) < 0.2  # loudness: nothing


def test_the_audit_catches_every_bypass_of_issue_12_case_9(runs, tmp_path):
    """#12 case 9: each bypass planted in a copy of a clean run is caught, whatever the file's name."""
    import io
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf
    from PIL import Image, PngImagePlugin

    from clinical_transfer.guardrails import BANNER, audit_run

    _, clean = runs
    assert audit_run(clean) == []
    raw_id = "RAWPERSONID0001"
    overlay = clean / "overlays" / "st" / "overlay.csv"
    wav = io.BytesIO()
    sf.write(wav, np.zeros(1600), 16000, format="WAV")

    def csv_edit(df):
        return lambda run: (run / "overlays" / "st" / "overlay.csv").write_text(
            f"# {BANNER}\n" + df(pd.read_csv(overlay, comment="#")).to_csv(index=False))

    def parquet_suppressed(run):
        p = run / "overlays" / "st" / "overlay.parquet"
        t = pd.read_parquet(p)
        t.loc[t.index[:3], "verdict"] = "suppressed"
        t.loc[t.index[:3], "n_participants_pos"] = 4
        table = pa.Table.from_pandas(t, preserve_index=False)
        pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"non_diagnostic": BANNER.encode()}), p)

    def parquet_meta(run):
        p = run / "overlays" / "st" / "controls.parquet"
        table = pq.read_table(p)
        pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"note": raw_id.encode()}), p)

    def png_chunk(run):
        p = next((run / "figures").glob("*.png"))
        info = PngImagePlugin.PngInfo()
        info.add_text("Description", BANNER)
        info.add_text("Comment", raw_id)
        Image.open(p).save(p, pnginfo=info)

    def symlinked_audio(run):
        outside = tmp_path / "outside"
        outside.mkdir(exist_ok=True)
        (outside / "x.wav").write_bytes(wav.getvalue())
        (run / "more").symlink_to(outside)

    plants = {
        "text names a feature after a disease ('covid detector')": lambda run: (run / "REPORT.md").write_text(
            (run / "REPORT.md").read_text() + "\nFeature 12 is a covid detector.\n"),
        "feature name(s) read like a diagnosis": csv_edit(lambda d: d.assign(feature_label="covid detector")),
        "report n_participants_pos < 10 without suppression": csv_edit(lambda d: d.assign(n_participants_pos=3)),
        "suppressed or not-estimable row(s) still show numbers": parquet_suppressed,
        "contains a raw corpus id": lambda run: (run / "notes.CSV").write_text(f"# {BANNER}\na,b\n{raw_id},1\n"),
        "contains a raw corpus id ": lambda run: (run / "ids.tsv").write_text(f"# {BANNER}\na\tb\n{raw_id}\t1\n"),
        "contains a raw corpus id  ": lambda run: (run / "README").write_text(f"{BANNER}\nsee {raw_id}\n"),
        "contains a raw corpus id   ": png_chunk,
        "contains a raw corpus id    ": parquet_meta,
        "audio (RIFF/WAV) must not be in a run folder": lambda run: (run / "x.dat").write_bytes(wav.getvalue()),
        "a gzip archive must not be in a run folder": lambda run: (run / "x.wav.gz").write_bytes(
            __import__("gzip").compress(wav.getvalue())),
        "audio or per-recording arrays must not be in a run folder": lambda run: (run / "x.aiff").write_bytes(b"\0" * 64),
        "a zip archive (e.g. .npz) must not be in a run folder": lambda run: np.savez(run / "cache.npz", a=np.zeros(3)),
        "a symbolic link": symlinked_audio,
        "one row per person (participant_id)": lambda run: (run / "people.csv").write_text(
            f"# {BANNER}\nparticipant_id,score\n" + "".join(f"p_{i:012d},0.{i}\n" for i in range(20))),
        "the non-diagnostic label is not visible at the top": lambda run: (run / "report.html").write_text(
            f"<html><!-- {BANNER} --><body><p>numbers</p></body></html>"),
    }
    for i, (message, plant) in enumerate(plants.items()):
        copy = shutil.copytree(clean, tmp_path / f"run{i}", symlinks=True)
        plant(copy)
        problems = audit_run(copy, raw_ids=[raw_id])
        assert len(problems) == 1 and message.strip() in problems[0], (message, problems)


def test_williams_tie_test_holds_its_size_and_finds_a_real_difference():
    """Ties at the top of a packet are judged by Williams' t for two correlations sharing the feature:
    simulated, equal correlations (0.5 and 0.5, descriptors correlated 0.8, n = 150) are called different
    at ~5%, unequal ones (0.6 vs 0.3) nearly always, and on ranks (what packets use) the 1.06 rank factor
    keeps the size near 5%; ``_mark_ties`` marks ties on a packet's rows."""
    from scipy.stats import rankdata

    from clinical_transfer.run.evidence import descriptor_associations, williams_p

    rng = np.random.default_rng(1)

    def draws(r12, r13, r23, n=150, reps=4000, ranks=False, spearman=False):
        cov = np.array([[1, r12, r13], [r12, 1, r23], [r13, r23, 1]])
        x = rng.multivariate_normal(np.zeros(3), cov, size=(reps, n))
        x = rankdata(x, axis=1) if ranks else x
        x = x - x.mean(axis=1, keepdims=True)
        c = np.einsum("rni,rnj->rij", x, x)
        d = np.sqrt(np.einsum("rii->ri", c))
        r = c / d[:, :, None] / d[:, None, :]
        return williams_p(r[:, 0, 1], r[:, 0, 2], r[:, 1, 2], n, spearman)

    size = (draws(0.5, 0.5, 0.8) < 0.05).mean()
    assert 0.035 < size < 0.065, size  # measured 0.053
    assert (draws(0.6, 0.3, 0.5) < 0.05).mean() > 0.9
    # what packets use: Spearman on ranks, with the 1.06 rank factor
    size = (draws(0.8, 0.8, 0.9, n=100, ranks=True, spearman=True) < 0.05).mean()
    assert 0.035 < size < 0.08, size  # measured 0.066 (plain t: 0.077)
    assert descriptor_group("egemaps_loudnessPeaksPerSec") == "temporal"  # eGeMAPS's rate of loudness peaks
    n = 150
    z = rng.normal(size=(n, 2))
    v = z[:, 0] + 0.2 * rng.normal(size=n)
    desc = pd.DataFrame({"egemaps_jitterLocal_sma3nz_amean": z[:, 0] + 0.5 * rng.normal(size=n),
                         "egemaps_shimmerLocaldB_sma3nz_amean": z[:, 0] + 0.5 * rng.normal(size=n),
                         "egemaps_loudness_sma3_amean": z[:, 1]})
    rows = {r["descriptor"]: r for r in descriptor_associations(v, desc, None, min_n=10)}
    assert rows["jitterLocal_sma3nz_amean"]["tied_with_top"] and rows["shimmerLocaldB_sma3nz_amean"]["tied_with_top"]
    assert rows["loudness_sma3_amean"]["tied_with_top"] is False and rows["loudness_sma3_amean"]["p_vs_top"] < 1e-6
