"""`clinical-transfer stats`: outputs, schema, guardrails, and one-line errors for bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from clinical_transfer.cli import main
from clinical_transfer.guardrails import BANNER
from clinical_transfer.stats.family import COLUMNS
from clinical_transfer.stats.verdicts import VERDICTS
from tests.stats_data import clustered_table

REQUIRED = ["label", "contrast", "segment_group", "feature", "n_participants_pos", "n_participants_neg", "beta_raw",
            "p_raw", "beta_adj", "se_adj", "t_adj", "p_adj", "q_adj", "attenuation", "auroc", "auroc_low",
            "auroc_high", "cohen_d_adj", "n_strata", "n_strata_same_sign", "heterogeneity_p", "verdict"]


@pytest.fixture()
def files(tmp_path):
    features, meta = clustered_table(n_participants=150, m=12, seed=4, effect={0: 1.0})
    features.to_parquet(tmp_path / "F.parquet")
    meta.to_csv(tmp_path / "M.csv", index=False)
    return tmp_path


def run(files, *extra):
    return main(["stats", "--features", str(files / "F.parquet"), "--meta", str(files / "M.csv"), "--label", "st",
                 "--confounds", "age,sex,wave", "--permutations", "40", "--out", str(files / "out"), *extra])


def test_writes_every_table_with_the_label(files, capsys):
    assert run(files) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == BANNER and "st [True vs False] / vowel: robust correlate 1" in printed
    out = files / "out"
    csv = pd.read_csv(out / "overlay.csv", comment="#")
    pq = pd.read_parquet(out / "overlay.parquet")
    assert list(csv.columns) == list(COLUMNS) and set(REQUIRED) <= set(csv.columns)
    assert len(pq) == len(csv) == 12 * 2 * 3  # 12 features x 2 groups x (st + age + sex controls)
    assert set(csv["verdict"]) <= set(VERDICTS)
    assert (out / "splits.parquet").is_file() and (out / "controls.parquet").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["non_diagnostic"] == BANNER and manifest["seed"] == 0
    assert set(manifest["inputs_sha256"]) == {str(files / "F.parquet"), str(files / "M.csv")}
    assert manifest["table_sha256"]["overlay.csv"]
    controls = pd.read_parquet(out / "controls.parquet")
    assert {"permutation_null", "positive_control", "inclusion"} <= set(controls["kind"])


def error_of(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_unknown_column(files, capsys):
    err = error_of(capsys, run(files, "--confounds", "age,sexx"))
    assert err.startswith("error: column 'sexx' is not in the metadata. Fix: use one of: recording_id, participant_id")


def test_non_numeric_feature(files, capsys):
    f = pd.read_parquet(files / "F.parquet")
    f["feat_3"] = f["feat_3"].astype(str)
    f.to_parquet(files / "F.parquet")
    err = error_of(capsys, run(files))
    assert err == ("error: feature column 'feat_3' is not numeric (dtype str). "
                   "Fix: convert 'feat_3' to numbers or drop it from the features table.")


def test_a_number_confound_with_text_cells_is_refused_and_a_coded_categorical_is_not(files, capsys):
    """An age column with 'unknown' in three rows would be one-hot coded, one dummy per age (a near-saturated
    design): refused with the cells named. A wave coded 1 / 2 / 'unknown' stays a categorical and runs."""
    m = pd.read_csv(files / "M.csv")
    m["age"] = m["age"].astype(object)
    m.loc[m.index[[3, 9, 27]], "age"] = "unknown"
    m.loc[m.index[40], "age"] = "n/a "
    m.to_csv(files / "M.csv", index=False)
    err = error_of(capsys, run(files))
    n = pd.to_numeric(m["age"], errors="coerce").nunique()
    assert n > 10
    assert err == (f"error: confound 'age' holds {n} distinct numbers but 4 row(s) hold text ('n/a', 'unknown'); "
                   "as text, every number would become its own category. Fix: make those cells empty (they are then "
                   "dropped as missing, and counted) or numbers; for a category coded with numbers (date codes), give "
                   "every value a text form, e.g. w20200415.")
    m = pd.read_csv(files / "M.csv")
    m["age"] = pd.to_numeric(m["age"], errors="coerce")  # the text cells now empty: dropped and counted
    m["wave"] = m["wave"].astype(str)
    m.loc[m.index[:30], "wave"] = "unknown"
    m.to_csv(files / "M.csv", index=False)
    assert run(files) == 0


def test_label_with_one_level(files, capsys):
    m = pd.read_csv(files / "M.csv")
    m["st"] = True
    m.to_csv(files / "M.csv", index=False)
    err = error_of(capsys, run(files))
    assert err == ("error: label 'st' has 1 level(s) in the data (True); a contrast needs two. "
                   "Fix: choose another label, or check that column 'st' is filled in.")


def test_group_with_too_few_participants(files, capsys):
    m = pd.read_csv(files / "M.csv")
    m.loc[m.index[:12], "segment_group"] = "breath"
    m.to_csv(files / "M.csv", index=False)
    err = error_of(capsys, run(files))
    assert err.startswith("error: segment_group 'breath' has too few participants for label 'st' (")
    assert "Fix: drop group 'breath' from the metadata, or pass --allow-small-groups" in err
    assert run(files, "--allow-small-groups") == 0
    table = pd.read_csv(files / "out" / "overlay.csv", comment="#")
    breath = table[(table["segment_group"] == "breath") & (table["label"] == "st")]
    assert (breath["verdict"] == "suppressed").all() and breath["beta_adj"].isna().all()


def test_duplicate_recording_ids(files, capsys):
    f = pd.read_parquet(files / "F.parquet")
    f.loc[1, "recording_id"] = f.loc[0, "recording_id"]
    f.to_parquet(files / "F.parquet")
    err = error_of(capsys, run(files))
    assert err == ("error: the features table repeats recording_id 'rec00000' (1 duplicate row(s)). "
                   "Fix: keep one row per recording.")


def test_contrast_values_must_occur(files, capsys):
    err = error_of(capsys, run(files, "--positive", "yes", "--negative", "False"))
    assert "no row matches the positive value(s) ['yes']" in err and "Fix: pass --positive values" in err


def test_python_api_returns_dataframes():
    from clinical_transfer.stats import overlay

    features, meta = clustered_table(n_participants=60, m=4)
    res = overlay(features, meta, "st", ["sex"], permutations=0)
    assert isinstance(res.overlay, pd.DataFrame) and isinstance(res.splits, pd.DataFrame)
    assert np.isfinite(res.overlay["beta_adj"]).all()
