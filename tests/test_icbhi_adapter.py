"""ICBHI 2017 adapter (#14 part 1): the published layout reproduced synthetically (no real data ships).

``ICBHI_final_database/`` with ``PPP_RRR_LL_M_DEVICE.wav`` + cycle ``.txt`` (tab-separated start, end,
crackles, wheezes), the diagnosis file, the demographic file (tab-separated, CRLF, ``NA``) and the official
train/test list (CRLF) one folder up; devices at their own sample rates (4 kHz, 44.1 kHz).
"""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clinical_transfer.audio import decode
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import adapter_entry, get_adapter, synth
from dataset_adapters.icbhi import read_cycles
from tests.conftest import run_corpus

DEVICES = {"AKGC417L": 44100, "Meditron": 4000, "LittC2SE": 4000, "Litt3200": 4000}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    top = tmp_path_factory.mktemp("icbhi")
    db = top / "ICBHI_final_database"
    db.mkdir()
    stems = []
    for i, patient in enumerate(range(101, 107)):
        for j, (loc, device) in enumerate((("Tc", "AKGC417L"), ("Al", "Meditron"))[: 1 + i % 2]):
            sr = DEVICES[device]
            y = synth.breathing(7.0, True, synth.Voice(), np.random.default_rng([i, j]), 16000)
            if sr != 16000:
                from scipy.signal import resample_poly
                y = resample_poly(y, sr // 100, 160).astype(np.float32)
            stem = f"{patient}_{j + 1}b1_{loc}_{'sc' if j == 0 else 'mc'}_{device}"
            sf.write(db / f"{stem}.wav", y, sr, subtype="PCM_16")
            if patient != 106:  # 106: a recording without its annotation file
                lines = [f"{0.5 + 2 * c:.3f}\t{2.2 + 2 * c:.3f}\t{int(c == 1)}\t{int(patient == 102)}" for c in range(3)]
                (db / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            stems.append(stem)
    (db / "notes_readme.wav").write_bytes(b"RIFF")  # not a recording name: ignored and noted
    # annotation times beyond the audio (7 s): one cycle ends after it, one starts after it
    (db / f"{stems[0]}.txt").write_text((db / f"{stems[0]}.txt").read_text() + "6.000\t7.900\t0\t0\n8.000\t9.000\t0\t0\n")
    diag = {101: "COPD", 102: "Healthy", 103: "URTI", 104: "Healthy", 105: "COPD", 106: "Pneumonia"}
    (top / "ICBHI_Challenge_diagnosis.txt").write_text("".join(f"{p}\t{d}\n" for p, d in diag.items()))
    demo = ["101\t70\tM\t25.1\tNA\tNA", "102\t0.5\tF\tNA\t7.2\t66", "103\t43\tF\t22\tNA\tNA", "104\t150\tM\t24\tNA\tNA",
            "105\t64\tM\t31.4\tNA\tNA", "106\tNA\tNA\tNA\tNA\tNA"]
    (top / "ICBHI_Challenge_demographic_information.txt").write_bytes("\r\n".join(demo).encode() + b"\r\n")
    (top / "ICBHI_challenge_train_test.txt").write_bytes(
        "".join(f"{s}\t{'train' if k % 2 == 0 else 'test'}\r\n" for k, s in enumerate(stems)).encode())
    return db


def test_every_cycle_is_a_breath_recording_with_its_annotation(corpus):
    adapter = get_adapter("icbhi", corpus.parent)
    t = adapter.recordings(progress=False)
    assert t["segment_group"].eq("breath").all() and t["task"].eq("breath").all()
    late = t[t["recording_id"].isin(["101_1b1_Tc_sc_AKGC417L_c04", "101_1b1_Tc_sc_AKGC417L_c05"])]
    assert list(late["status"]) == ["ok", "missing"]
    assert list(late["status_reason"]) == ["cycle end 7.90 s beyond the recording (7.00 s): cut at its end",
                                           "cycle 8.00-9.00 s starts after the recording ends (7.00 s)"]
    assert late["duration_s"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    annotated = t[(t["status"] == "ok") & ~t["recording_id"].isin(late["recording_id"])]
    assert len(annotated) == 3 * 7 and annotated["duration_s"].round(2).eq(1.7).all()  # 5 patients, 7 recordings
    assert set(annotated["sample_rate_hz"]) == {4000, 44100}
    missing = t[t["participant_id"] == "106"]
    assert len(missing) == 2 and missing["status"].eq("missing").all()
    assert missing["status_reason"].eq("no cycle annotation (.txt) beside the recording").all()
    c = t.set_index("recording_id")
    assert c.loc["101_1b1_Tc_sc_AKGC417L_c02", "crackles"] and not c.loc["101_1b1_Tc_sc_AKGC417L_c01", "crackles"]
    assert c.loc["102_1b1_Tc_sc_AKGC417L_c01", "wheezes"] and not c.loc["101_1b1_Tc_sc_AKGC417L_c01", "wheezes"]
    assert c.loc["102_2b1_Al_mc_Meditron_c03", "device"] == "Meditron" and c.loc["102_2b1_Al_mc_Meditron_c03",
                                                                                   "chest_location"] == "Al"
    assert c.loc["101_1b1_Tc_sc_AKGC417L_c01", "icbhi_split"] == "train"
    assert c.loc["102_1b1_Tc_sc_AKGC417L_c01", "diagnosis"] == "Healthy" and c.loc["102_1b1_Tc_sc_AKGC417L_c01",
                                                                                    "healthy"]
    assert c.loc["102_1b1_Tc_sc_AKGC417L_c01", "age"] == 0.5 and c.loc["102_1b1_Tc_sc_AKGC417L_c01", "sex"] == "female"
    assert c.loc["102_1b1_Tc_sc_AKGC417L_c01", "child_weight_kg"] == 7.2
    assert pd.isna(c.loc["104_1b1_Tc_sc_AKGC417L_c01", "age"])  # 150 years: unknown, counted
    assert "1 age value(s) outside 0-120 set to unknown" in adapter.notes
    assert "1 .wav file(s) whose name is not PPP_RRR_LL_M_DEVICE ignored" in adapter.notes


def test_cycles_are_cut_in_memory_at_sample_precision(corpus):
    wav = corpus / "101_1b1_Tc_sc_AKGC417L.wav"
    full, sr = sf.read(wav, dtype="float32")
    (src, data), = read_cycles([f"{wav}#t=0.500,2.200"])
    x, rate = decode(data)
    assert rate == sr and np.array_equal(x[:, 0], full[int(0.5 * sr):int(2.2 * sr)])
    again = dict(read_cycles([src]))[src]
    assert again == data  # deterministic bytes: the audio hash of a cycle is stable


def test_listed_and_a_wrong_layout_is_one_clear_error(tmp_path):
    assert "Physiol Meas 40:035001" in adapter_entry("icbhi").citation
    with pytest.raises(ClinicalTransferError, match="ICBHI_Challenge_diagnosis.txt not found"):
        get_adapter("icbhi", tmp_path)


def test_run_overlay_end_to_end_on_the_fixture_passes_the_audit(corpus, tmp_path):
    from clinical_transfer.guardrails import audit_run

    out = run_corpus(tmp_path, "icbhi", corpus, "crackles", ["device"], "breath")
    assert audit_run(out) == []
    assert "starts after the recording ends" in (out / "REPORT.md").read_text()
