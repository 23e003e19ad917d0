"""The demo corpus: Coswara's layout, determinism, planted faults, and tar parts == extracted."""

import hashlib
import json

import pandas as pd
import pytest

from dataset_adapters import get_adapter
from dataset_adapters.demo import COMBINED_COLUMNS, FAULTS, WAVES, DemoConfig, _participant, write_demo_corpus
from dataset_adapters.segments import COSWARA_TYPES


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_matches_coswara(demo_small):
    combined = pd.read_csv(demo_small / "combined_data.csv", dtype=str, keep_default_na=False)
    assert list(combined.columns) == COMBINED_COLUMNS and len(COMBINED_COLUMNS) == 36
    assert len(combined) == 24
    assert json.loads((demo_small / "csv_labels_legend.json").read_text())["st"] == "Sore Throat (True/False)"
    for rtype in COSWARA_TYPES:
        lines = (demo_small / "annotations" / f"{rtype}_labels.csv").read_text().splitlines()
        assert lines[0] == "FILENAME, QUALITY" and len(lines) == 25
    for wave in WAVES:
        assert (demo_small / wave / f"{wave}.csv").is_file()
    wavs = list(demo_small.rglob("*.wav"))
    assert len(wavs) == 24 * 9 - 1  # one planted missing file
    assert all(p.parent.parent.name in WAVES for p in wavs)


def test_same_seed_same_bytes(tmp_path):
    cfg = DemoConfig(n_participants=4, duration_s=1.0)
    a = write_demo_corpus(tmp_path / "a", cfg, progress=False)
    b = write_demo_corpus(tmp_path / "b", cfg, progress=False)
    c = write_demo_corpus(tmp_path / "c", DemoConfig(n_participants=4, duration_s=1.0, seed=1), progress=False)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)


def test_every_fault_is_in_the_inventory_with_its_reason(demo_small_recordings):
    rec = demo_small_recordings
    pid = {i: _participant(i, DemoConfig(n_participants=24)).pid for i, _ in FAULTS.values()}

    def row(fault):
        i, rtype = FAULTS[fault]
        return rec[(rec["participant_id"] == pid[i]) & (rec["recording_type"] == rtype)].iloc[0]

    assert (row("missing")["status"], row("missing")["status_reason"]) == ("missing", "file not found")
    assert row("silent")["status"] == "silent" and "dBFS" in row("silent")["status_reason"]
    corrupt = row("corrupt")
    assert corrupt["status"] == "unreadable" and corrupt["status_reason"].startswith("cannot decode audio")
    assert row("rate_44k1")["status"] == "ok" and row("rate_44k1")["sample_rate_hz"] == 44100
    # the run carried on: every other recording is ok, and none was dropped
    assert len(rec) == 24 * 9
    assert rec["status"].value_counts().to_dict() == {"ok": 24 * 9 - 3, "missing": 1, "silent": 1, "unreadable": 1}


def test_planted_labels_are_in_the_metadata(demo_small_recordings):
    meta = demo_small_recordings.drop_duplicates("participant_id")
    assert meta["st"].fillna(False).sum() > 0 and meta["asthma"].fillna(False).sum() > 0
    assert set(meta["sex"]) == {"male", "female"}


def test_split_tar_parts_give_the_same_recording_table(demo_small_recordings, demo_small_tar):
    from_tar = get_adapter("coswara", demo_small_tar).recordings(progress=False)
    assert from_tar["source"].str.contains(r"\.tar\.gz\.\*::").sum() == 24 * 9 - 1
    assert len(list(demo_small_tar.rglob("*.tar.gz.ab"))) == len(WAVES)  # really split
    assert not list(demo_small_tar.rglob("*.wav"))  # nothing extracted
    pd.testing.assert_frame_equal(
        demo_small_recordings.drop(columns="source"), from_tar.drop(columns="source"), check_exact=True
    )


def test_unknown_layout_is_an_error(tmp_path):
    from clinical_transfer.errors import ClinicalTransferError

    with pytest.raises(ClinicalTransferError, match="unknown demo layout 'zip'"):
        write_demo_corpus(tmp_path, DemoConfig(layout="zip"), progress=False)


def test_planted_pairs_are_the_corpus_audio_and_the_same_voice_without_the_plant(demo_small, demo_small_recordings):
    """The planted-truth probe's pairs: 'on' is the corpus's own decoded WAV, sample for sample; 'off' has the
    same length and differs; only st participants' voiced, non-fault recordings appear, in planted_keys order."""
    import numpy as np
    import soundfile as sf

    from dataset_adapters.demo import VOICED_TYPES, planted_keys, planted_pairs

    cfg = DemoConfig(n_participants=24)
    keys = planted_keys(cfg)
    st = {i for i in range(24) if _participant(i, cfg).st}
    assert {i for i, _ in keys} == st and len(st) >= 3
    assert all(t in VOICED_TYPES and (i, t) not in FAULTS.values() for i, t in keys)
    assert len(keys) == 5 * len(st) - sum(i in st and t in VOICED_TYPES for i, t in FAULTS.values())
    rec = demo_small_recordings.set_index("recording_id")
    for (i, rtype, on, off), key in zip(planted_pairs(cfg, keys[:6]), keys[:6]):
        assert (i, rtype) == key
        stored, sr = sf.read(rec.loc[f"{_participant(i, cfg).pid}_{rtype}", "source"], dtype="float32")
        assert sr == cfg.sample_rate_hz and np.array_equal(on, stored)
        assert off.shape == on.shape and np.abs(off - on).max() > 0.01
