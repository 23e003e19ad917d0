"""run-overlay on the demo corpus and on the real sample: the inventory stage end to end."""

import pandas as pd
import pytest

from clinical_transfer.cli import main, run_overlay_main
from clinical_transfer.guardrails import BANNER
from tests.conftest import SAMPLE, SAMPLE_ID


def small_demo_config(tmp_path):
    cfg = tmp_path / "demo.toml"
    cfg.write_text("[guardrails]\nsalt = 'test-salt-0123456789'\n[demo]\nn_participants = 12\nduration_s = 1.5\n")
    return cfg


def test_run_overlay_demo_writes_a_guarded_inventory(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_overlay_main(["--demo", "--quiet", "--inventory-only", "--config", str(small_demo_config(tmp_path)),
                             "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == BANNER
    assert "status: ok 105, missing 1, unreadable 1, silent 1, too_short 0" in printed
    inv = pd.read_csv(out / "inventory.csv", comment="#")
    assert len(inv) == 12 * 9
    assert inv["participant_id"].str.match(r"^p_[0-9a-f]{12}$").all()
    assert not list(out.rglob("*.wav"))  # the corpus lives beside the output, never inside it
    for f in out.rglob("*"):
        if f.suffix in (".csv", ".json", ".md"):
            assert BANNER in f.read_text(), f


def test_clinical_transfer_run_overlay_is_the_run_overlay_command(tmp_path, capsys):
    """A newcomer types `clinical-transfer run-overlay ...`: the main job, with run-overlay's own options
    (it was 'invalid choice'), and it is listed in clinical-transfer --help."""
    out = tmp_path / "run"
    assert main(["run-overlay", "--demo", "--quiet", "--inventory-only", "--config", str(small_demo_config(tmp_path)),
                 "--out", str(out)]) == 0
    assert "status: ok 105, missing 1, unreadable 1, silent 1, too_short 0" in capsys.readouterr().out
    assert main(["run-overlay", "--dataset", "nosuch", "--data-root", str(tmp_path), "--salt", "x" * 20,
                 "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown dataset 'nosuch'.")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "run-overlay      the main job" in capsys.readouterr().out


def test_real_sample_through_run_overlay(tmp_path, coswara_dir, capsys):
    out = tmp_path / "run"
    code = main(["inventory", "--quiet", "--data-root", str(SAMPLE), "--metadata-root", str(coswara_dir),
                 "--only-with-audio", "--salt", "test-salt-0123456789", "--out", str(out)])
    assert code == 0
    text = "".join(p.read_text() for p in out.glob("*.csv")) + (out / "manifest.json").read_text()
    assert SAMPLE_ID not in text  # raw corpus ids appear nowhere under the output folder
    inv = pd.read_csv(out / "inventory.csv", comment="#")
    assert inv["status"].value_counts().to_dict() == {"ok": 8, "missing": 1}


def test_real_sample_through_the_full_run_overlay(tmp_path, coswara_dir, capsys):
    """One real participant: far too few for any contrast; every cell suppressed with its reason, no crash.
    Without --sae a real corpus gets an SAE fit to it (here held out by recording: one person)."""
    from tests.conftest import REPO

    out = tmp_path / "run"
    config = tmp_path / "coswara.toml"  # the shipped config, with a short SAE fit (steps) for the test
    config.write_text((REPO / "configs" / "coswara.toml").read_text().replace("steps = 600", "steps = 60").replace("seeds = 3 ", "seeds = 2 "))
    code = run_overlay_main(["--dataset", "coswara", "--data-root", str(SAMPLE), "--metadata-root", str(coswara_dir),
                             "--only-with-audio", "--config", str(config), "--salt", "test-salt-0123456789",
                             "--quiet", "--out", str(out)])
    assert code == 0
    for label in ("covid_status", "asthma", "smoker", "cough"):
        table = pd.read_csv(out / "overlays" / label / "overlay.csv", comment="#", low_memory=False)
        assert (table["verdict"] == "suppressed").all()
        assert table["note"].str.startswith("suppressed").all() and table["beta_adj"].isna().all()
    report = (out / "REPORT.md").read_text()
    assert "no row matches the positive value(s) ['positive_*'] (values present: healthy)" in report
    assert "one participant only, so recordings are held out instead of people: 6 recordings trained the SAE, 2 " \
           "measured its quality" in report and "the embedded demo SAE on the same held-out frames" in report
    assert SAMPLE_ID not in report


def test_atlas_labels_join_and_disease_words_are_rewritten():
    from clinical_transfer.run.overlay import _join_atlas

    overlay = pd.DataFrame({"label": "st", "segment_group": ["vowel", "cough"], "feature": "feature_00001"})
    atlas = pd.DataFrame({"feature": ["feature_00001"], "feature_label": ["covid cough biomarker"]})
    out = _join_atlas(overlay, atlas, "coswara").set_index("segment_group")
    assert out.loc["vowel", "feature_label"] == "correlate of st in coswara (vowel)"
    assert out.loc["cough", "feature_label_original"] == "covid cough biomarker" and out["label_flagged"].all()


def test_run_overlay_encoder_flags_override_the_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[guardrails]\nsalt = 'test-salt-0123456789'\n[demo]\nn_participants = 12\nduration_s = 1.5\n"
                   "[[analysis.labels]]\ncolumn = 'st'\n")
    code = run_overlay_main(["--demo", "--quiet", "--config", str(cfg), "--layer", "2", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "no SAE configured for this encoder/layer" in capsys.readouterr().err
