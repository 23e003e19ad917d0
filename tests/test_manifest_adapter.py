"""The generic CSV manifest adapter (#14 part 1): any corpus runs without code.

A demo corpus (Coswara layout) is described again as a manifest: the manifest adapter must account for
the same recordings with the same statuses and audio hashes as the Coswara adapter, and an overlay run
through it must find the planted voice-quality effect.
"""

from pathlib import Path

import pandas as pd
import pytest

from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import get_adapter
from dataset_adapters.manifest import normalise_segment_type
from dataset_adapters.segments import segment_of
from tests.conftest import run_corpus


def write_manifest(corpus: Path, recs: pd.DataFrame, out: Path, **extra) -> Path:
    """A manifest of the corpus's recordings (missing files included: the adapter must report them)."""
    people = pd.read_csv(corpus / "combined_data.csv", dtype=str)
    people = people.rename(columns={"id": "participant_id", "a": "age", "g": "sex"})
    rows = recs[["recording_id", "participant_id", "recording_type", "source"]].copy()
    rows["path"] = [str(Path(s).relative_to(corpus)) if isinstance(s, str) else
                    f"{p}/{t}.wav" for s, p, t in zip(rows["source"], rows["participant_id"], rows["recording_type"])]
    rows = rows.rename(columns={"recording_type": "segment_type"}).drop(columns="source")
    rows = rows.merge(people[["participant_id", "age", "sex", "asthma"]], on="participant_id", how="left")
    rows = rows.merge(recs.drop_duplicates("participant_id")[["participant_id", "st"]], on="participant_id")
    rows["postcode"] = "SW1A 1AA"  # a location column: never read
    for k, v in extra.items():
        rows[k] = v
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def manifest(demo_small, demo_small_recordings, tmp_path_factory):
    return write_manifest(demo_small, demo_small_recordings, demo_small / "manifest.csv")


def test_the_manifest_accounts_for_the_same_recordings_as_the_coswara_adapter(manifest, demo_small_recordings):
    got = get_adapter("manifest", manifest.parent).recordings(progress=False)
    want = demo_small_recordings
    assert len(got) == len(want) == 24 * 9
    cols = ["recording_id", "participant_id", "recording_type", "segment_group", "status", "status_reason",
            "audio_sha256", "duration_s", "tag"]
    a = got[cols].sort_values("recording_id").reset_index(drop=True)
    b = want[cols].sort_values("recording_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert set(got["status"]) == set(want["status"]) and (got["status"] == "missing").sum() == 1
    assert got["dataset"].eq("manifest").all() and {"st", "asthma"} <= set(got.columns)
    assert "postcode" not in got.columns and "SW1A 1AA" not in set(got.astype(str).to_numpy().ravel())


def test_segment_types_groups_and_tasks_map_onto_the_taxonomy():
    assert normalise_segment_type("Vowel") == "vowel-a"
    assert normalise_segment_type("counting") == "counting-normal"
    assert segment_of(normalise_segment_type("three_cough")).segment_group == "cough"
    assert segment_of(normalise_segment_type("exhalation")).segment_group == "breath"
    assert normalise_segment_type("whistle") == "whistle"  # unknown: group "other", reported


@pytest.mark.parametrize("text, message", [
    ("path,participant_id\na.wav,p1\n", "lacks column(s) segment_type"),
    ("path,participant_id,segment_type\na.wav,,cough\n", "manifest rows 2 have an empty path, participant_id"),
    ("path,participant_id,segment_type,status\na.wav,p1,cough,x\n", "clash with the Recording table"),
    ("path,participant_id,segment_type,recording_id\na.wav,p1,cough,r\nb.wav,p1,cough,r\n", "are not unique"),
])
def test_a_malformed_manifest_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(ClinicalTransferError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_adapter("manifest", tmp_path).recordings(progress=False)


def test_implausible_ages_become_unknown_and_are_counted(tmp_path, demo_small, demo_small_recordings):
    path = write_manifest(demo_small, demo_small_recordings.head(18), tmp_path / "m.csv")
    t = pd.read_csv(path, dtype=str)
    t.loc[t["participant_id"] == t["participant_id"].iloc[0], "age"] = "999"
    t.to_csv(path, index=False)
    # the manifest's own paths are relative to its folder: point them back at the corpus
    t["path"] = [str(demo_small / p) for p in t["path"]]
    t.to_csv(path, index=False)
    adapter = get_adapter("manifest", path)
    got = adapter.recordings(progress=False)
    assert got.loc[got["participant_id"] == t["participant_id"].iloc[0], "age"].isna().all()
    assert "9 age value(s) outside 0-120 set to unknown" in adapter.notes


def test_an_overlay_through_the_manifest_finds_the_planted_effect(tmp_path):
    """End to end: a 60-participant demo corpus as a manifest, st analysed in vowels (planted)."""
    from dataset_adapters.demo import DemoConfig, write_demo_corpus

    corpus = write_demo_corpus(tmp_path / "corpus", DemoConfig(n_participants=60, duration_s=1.5, faults=False),
                               progress=False)
    recs = get_adapter("coswara", corpus).recordings(progress=False)
    m = write_manifest(corpus, recs, corpus / "manifest.csv")
    out = run_corpus(tmp_path, "manifest", m, "st", ["age", "sex"], "vowel", 'missing_as = "False"')
    t = pd.read_csv(out / "overlays" / "st" / "overlay.csv", comment="#", low_memory=False)
    t = t[t["role"] == "target"]
    hits = t[t["verdict"].str.contains("correlate")]
    assert len(hits[hits["segment_group"] == "vowel"]) >= 5
    report = (out / "REPORT.md").read_text()
    assert "manifest" in report
