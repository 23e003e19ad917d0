"""Normalisation of the real combined_data.csv (2,746 participants) and its side tables."""

import pandas as pd
import pytest

from dataset_adapters.coswara import CoswaraAdapter, normalise_metadata, read_date_map, read_quality


@pytest.fixture(scope="module")
def meta(coswara_dir):
    return CoswaraAdapter(coswara_dir).metadata()


def counts(series: pd.Series) -> dict:
    return {("NA" if pd.isna(k) else k): int(v) for k, v in series.value_counts(dropna=False).items()}


def test_keeps_every_participant_once(meta):
    assert len(meta) == 2746
    assert meta["participant_id"].is_unique


def test_covid_positive_contrast_counts(meta):
    assert counts(meta["covid_positive"]) == {False: 1433, True: 681, "NA": 632}
    assert counts(meta["covid_status"])["positive_mild"] == 426  # raw status is kept


def test_smoker_mixed_encodings_map_to_one_boolean(meta):
    # raw: '' 1660, n 850, True 123, y 102, False 11
    assert counts(meta["smoker"]) == {"NA": 1660, False: 861, True: 225}


def test_blank_symptoms_are_unknown_not_false(meta):
    assert counts(meta["cough"]) == {"NA": 2094, True: 652}
    assert counts(meta["asthma"]) == {"NA": 2612, True: 134}
    assert str(meta["cough"].dtype) == "boolean"


def test_yes_no_and_confound_columns(meta):
    assert counts(meta["english_proficiency"]) == {True: 2514, False: 232}
    assert counts(meta["returning_user"]) == {False: 2003, "NA": 680, True: 63}
    assert counts(meta["sex"]) == {"male": 1900, "female": 844, "other": 2}
    assert meta["age"].min() == 1 and meta["age"].max() == 99
    assert counts(meta["country"])["India"] == 2515


def test_messy_values_are_normalised_and_noted(coswara_dir):
    raw = pd.read_csv(coswara_dir / "combined_data.csv", dtype=str, keep_default_na=False)
    table, notes = normalise_metadata(raw)
    assert int(table["testType"].isna().sum()) == 1941 + 13  # blanks + 13 stray 'False'
    assert "testType: 13 stray 'False' value(s) -> unknown" in notes
    assert counts(table["test_status"])["ut"] == 81  # not in the legend, kept raw
    assert any(n.startswith("covid_positive: 681 positive_* vs 1433 healthy; 632") for n in notes)


def test_wave_comes_from_date_csvs_not_record_date(coswara_dir, meta):
    dates = read_date_map(coswara_dir)
    assert len(dates) == 2746
    assert meta["wave"].notna().all()
    assert meta["wave"].nunique() == 43
    disagree = (meta["wave"] != meta["record_date"].str.replace("-", "")).sum()
    assert disagree == 2159  # SOURCE.md: record_date disagrees with the date folder in 2,159 rows


def test_quality_annotations_header_with_space(coswara_dir):
    q = read_quality(coswara_dir)
    assert q["zNNcSmfHhTbjLm5NcVmrOAf5C2j2_vowel-o"] == 0
    assert q["zNNcSmfHhTbjLm5NcVmrOAf5C2j2_counting-normal"] == 2
    assert set(q.values()) == {0, 1, 2}
