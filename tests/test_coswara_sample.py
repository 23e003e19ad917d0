"""The adapter on one real participant's recordings (../shared/data/coswara/sample)."""

import pytest

from dataset_adapters import get_adapter
from tests.conftest import SAMPLE, SAMPLE_ID

EXPECTED_DURATIONS_S = {
    "breathing-shallow": 13.056, "cough-heavy": 5.717, "cough-shallow": 4.693, "counting-fast": 7.936,
    "counting-normal": 10.581, "vowel-a": 5.035, "vowel-e": 3.243, "vowel-o": 2.731,
}


@pytest.fixture(scope="module")
def rec(coswara_dir):
    adapter = get_adapter("coswara", SAMPLE, metadata_root=coswara_dir, only_with_audio=True)
    return adapter.recordings(progress=False).set_index("recording_type")


def test_eight_ok_one_missing(rec):
    assert len(rec) == 9
    assert (rec["participant_id"] == SAMPLE_ID).all()
    assert rec["status"].value_counts().to_dict() == {"ok": 8, "missing": 1}
    assert rec.loc["breathing-deep", "status"] == "missing"
    assert rec.loc["breathing-deep", "status_reason"] == "file not found"


def test_segment_groups(rec):
    assert rec["segment_group"].to_dict() == {
        "breathing-deep": "breath", "breathing-shallow": "breath", "cough-heavy": "cough",
        "cough-shallow": "cough", "counting-fast": "prompted_speech", "counting-normal": "prompted_speech",
        "vowel-a": "vowel", "vowel-e": "vowel", "vowel-o": "vowel",
    }
    assert rec.loc["counting-fast", "task"] == "counting" and bool(rec.loc["counting-fast", "prompted_task"])
    assert not bool(rec.loc["cough-heavy", "prompted_task"])


def test_rates_and_durations(rec):
    ok = rec[rec["status"] == "ok"]
    assert (ok["sample_rate_hz"] == 48000).all()
    for rtype, dur in EXPECTED_DURATIONS_S.items():
        assert rec.loc[rtype, "duration_s"] == pytest.approx(dur, abs=1e-3)


def test_metadata_joined(rec):
    row = rec.loc["vowel-a"]
    assert row["age"] == 53 and row["sex"] == "female" and row["country"] == "India"
    assert row["english_proficiency"] == False  # noqa: E712  (ep = n)
    assert row["ht"] == True and row["diabetes"] == True  # noqa: E712
    assert row["covid_status"] == "healthy" and row["covid_positive"] == False  # noqa: E712
    assert row["wave"] == "20200415"
    assert rec.loc["vowel-o", "quality"] == 0 and rec.loc["counting-normal", "quality"] == 2
