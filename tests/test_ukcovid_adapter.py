"""UK COVID-19 Vocal Audio Dataset adapter (#14 part 1): the open edition's layout reproduced
synthetically — three CSVs keyed by participant_identifier, audio/ WAVs for exhalation, cough and
three-cough, the published split columns — with a header-only WAV, a listed-but-absent file, a
modality not recorded, and location / free-text columns that must never be read."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import adapter_entry, get_adapter, synth
from tests.conftest import run_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ukcovid")
    (root / "audio").mkdir()
    people, audio, splits = [], [], []
    for i in range(14):
        pid = f"UK{i:05d}"
        rng = np.random.default_rng(i)
        row = {"participant_identifier": pid}
        for prefix, kind in (("exhalation", "breath"), ("cough", "cough"), ("three_cough", "cough")):
            name = f"{pid}_{prefix}.wav"
            if i == 3 and prefix == "three_cough":
                row[f"{prefix}_file_name"] = ""  # not recorded
                continue
            row[f"{prefix}_file_name"] = name
            if i == 4 and prefix == "cough":
                continue  # listed but absent
            if i == 5 and prefix == "exhalation":
                sf.write(root / "audio" / name, np.zeros(0, np.float32), 48000)  # header only (44 bytes)
                continue
            y = (synth.breathing(2.0, True, synth.Voice(), rng, 48000) if kind == "breath"
                 else synth.cough(2.0, True, synth.Voice(), rng, 48000))
            sf.write(root / "audio" / name, y, 48000, subtype="PCM_16")
        audio.append(row)
        people.append({"participant_identifier": pid, "covid_test_result": ("Positive", "Negative", "")[i % 3],
                       "covid_test_method": "PCR", "covid_test_date": f"2021-05-0{1 + i % 9}",
                       "age": "Prefer not to say" if i == 6 else str(20 + 4 * i), "gender": ("Male", "Female")[i % 2],
                       "symptom_cough_any": str(i % 2), "recruitment_source": ("Test and Trace", "REACT")[i % 2],
                       "submission_date": f"2021-0{3 + i % 4}-15", "postcode_area": "SW1A",
                       "symptom_other_text": "my neighbour Jane"})
        splits.append({"participant_identifier": pid, "splits": ("train", "val", "test", "long")[i % 4],
                       "naive_splits": ("train", "test")[i % 2], "matched_train_splits": "matched_train",
                       "in_matched_rebalanced_test": str(i % 5 == 0)})
    audio.append({"participant_identifier": "UK99999", "cough_file_name": "x.wav"})  # not in participant_metadata
    pd.DataFrame(people).to_csv(root / "participant_metadata.csv", index=False)
    pd.DataFrame(audio).to_csv(root / "audio_metadata.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "train_test_splits.csv", index=False)
    return root


def test_every_modality_of_every_participant_is_accounted_for(corpus):
    adapter = get_adapter("ukcovid", corpus)
    t = adapter.recordings(progress=False)
    assert len(t) == 14 * 3
    assert dict(t.groupby("recording_type")["segment_group"].first()) == {
        "cough": "cough", "exhalation": "breath", "three-cough": "cough"}
    s = t.set_index("recording_id")
    assert s.loc["UK00003_three-cough", "status_reason"] == "no three_cough recording listed in audio_metadata.csv"
    assert s.loc["UK00004_cough", ["status", "status_reason"]].tolist() == ["missing", "file not found"]
    assert s.loc["UK00005_exhalation", ["status", "status_reason"]].tolist() == ["too_short", "empty: 0 samples"]
    assert (t["status"] == "ok").sum() == 42 - 3
    assert "1 audio_metadata row(s) of participants not in participant_metadata.csv (ignored)" in adapter.notes


def test_labels_splits_and_no_location_free_text_or_exact_date(corpus):
    adapter = get_adapter("ukcovid", corpus)
    t = adapter.recordings(progress=False, tag=False)
    s = t.drop_duplicates("participant_id").set_index("participant_id")
    assert s.loc["UK00000", "covid_positive"] == True and s.loc["UK00001", "covid_positive"] == False  # noqa: E712
    assert pd.isna(s.loc["UK00002", "covid_positive"]) and pd.isna(s.loc["UK00006", "age"])
    assert s.loc["UK00001", "sex"] == "female" and s.loc["UK00001", "symptom_cough_any"]
    assert s.loc["UK00000", "wave"] == "2021-03" and s.loc["UK00003", "splits"] == "long"
    assert s.loc["UK00005", "in_matched_rebalanced_test"] == "True" and s.loc["UK00001", "naive_splits"] == "test"
    cells = set(t.astype(str).to_numpy().ravel())
    assert not {"SW1A", "my neighbour Jane", "2021-05-01"} & cells
    assert not {"postcode_area", "symptom_other_text", "covid_test_date", "submission_date"} & set(t.columns)
    assert any("postcode_area, symptom_other_text" in n for n in adapter.notes)


def test_listed_with_its_licence_and_a_wrong_layout_is_one_clear_error(tmp_path):
    assert adapter_entry("ukcovid").licence == "Open Government Licence v3.0"
    with pytest.raises(ClinicalTransferError, match="is not a UK COVID-19 Vocal Audio layout"):
        get_adapter("ukcovid", tmp_path)


def test_run_overlay_end_to_end_on_the_fixture_passes_the_audit(corpus, tmp_path):
    from clinical_transfer.guardrails import audit_run

    out = run_corpus(tmp_path, "ukcovid", corpus, "covid_positive", ["sex"], "cough")
    assert audit_run(out, raw_ids=[f"UK{i:05d}" for i in range(14)] + ["my neighbour Jane"]) == []
    assert "- licence: Open Government Licence v3.0; cite: The UK COVID-19 Vocal Audio Dataset" in (
        out / "REPORT.md").read_text()
