"""Local Hugging Face datasets folders (#14 part 1): a DatasetDict saved with save_to_disk and an
audiofolder (metadata.csv + files), both built from a demo corpus, account for the same recordings as the
Coswara adapter; an overlay runs end to end and passes the audit."""

import pandas as pd
import pytest

from dataset_adapters import get_adapter
from tests.conftest import run_corpus

COLS = ["recording_id", "participant_id", "recording_type", "segment_group", "status", "audio_sha256", "duration_s"]


@pytest.fixture(scope="module")
def saved(demo_small, demo_small_recordings, tmp_path_factory):
    import datasets

    recs = demo_small_recordings[demo_small_recordings["source"].notna()]
    people = sorted(recs["participant_id"].unique())
    rows = {"audio": [], "participant_id": [], "segment_type": [], "recording_id": [], "st": [], "notes": []}
    for _, r in recs.iterrows():
        rows["audio"].append({"bytes": open(r["source"], "rb").read(), "path": r["recording_type"] + ".wav"})
        rows["participant_id"].append(r["participant_id"])
        rows["segment_type"].append(r["recording_type"])
        rows["recording_id"].append(r["recording_id"])
        rows["st"].append(str(r["st"]))
        rows["notes"].append("called from home, Elm Street")  # free text: never read
    full = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    train = full.filter(lambda p: p in people[:16], input_columns="participant_id")
    test = full.filter(lambda p: p in people[16:], input_columns="participant_id")
    root = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(root))
    return root


def test_a_saved_datasetdict_gives_the_coswara_adapters_recordings(saved, demo_small_recordings):
    adapter = get_adapter("hf-folder", saved)
    got = adapter.recordings(progress=False)
    want = demo_small_recordings[demo_small_recordings["source"].notna()]
    a = got[COLS].sort_values("recording_id").reset_index(drop=True)
    b = want[COLS].sort_values("recording_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert set(got["hf_split"]) == {"train", "test"} and "notes" not in got.columns
    assert any("free-text" in n for n in adapter.notes)
    src, data = next(adapter.read_sources([got["source"].iloc[0]]))
    assert len(data) > 1000


def test_an_audiofolder_is_read_as_a_manifest(demo_small, demo_small_recordings, tmp_path):
    recs = demo_small_recordings[demo_small_recordings["source"].notna()].head(18)
    meta = pd.DataFrame({"file_name": [str(p) for p in recs["source"]], "participant_id": recs["participant_id"],
                         "segment_type": recs["recording_type"], "recording_id": recs["recording_id"]})
    meta.to_csv(tmp_path / "metadata.csv", index=False)
    got = get_adapter("hf-folder", tmp_path).recordings(progress=False)
    assert list(got.sort_values("recording_id")["audio_sha256"]) == list(recs.sort_values("recording_id")["audio_sha256"])


def test_a_folder_that_is_not_a_dataset_is_one_clear_error(tmp_path):
    from clinical_transfer.errors import ClinicalTransferError

    with pytest.raises(ClinicalTransferError, match="is not a Hugging Face datasets folder"):
        get_adapter("hf-folder", tmp_path)


def test_run_overlay_end_to_end_on_the_saved_dataset_passes_the_audit(saved, tmp_path):
    from clinical_transfer.guardrails import audit_run

    out = run_corpus(tmp_path, "hf-folder", saved, "st", ["hf_split"], "vowel", 'missing_as = "False"')
    assert audit_run(out) == []
