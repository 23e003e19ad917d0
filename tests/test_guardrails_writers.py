"""The writers every output goes through: banner, pseudonyms, refused columns."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from clinical_transfer import guardrails


def test_csv_has_banner_and_reads_with_comment(tmp_path):
    df = pd.DataFrame({"feature": ["f1", "f2"], "beta": [0.5, -1.25]})
    csv, parquet = guardrails.write_table(df, tmp_path / "t")
    assert csv.read_text().splitlines()[0] == f"# {guardrails.BANNER}"
    pd.testing.assert_frame_equal(pd.read_csv(csv, comment="#"), df)
    meta = pq.read_schema(parquet).metadata
    assert meta[b"non_diagnostic"].decode() == guardrails.BANNER
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), df)


def test_json_and_text_carry_the_banner(tmp_path):
    j = guardrails.write_json({"x": 1}, tmp_path / "m.json")
    assert json.loads(j.read_text())["non_diagnostic"] == guardrails.BANNER
    t = guardrails.write_text("# Report", tmp_path / "r.md")
    assert guardrails.BANNER in t.read_text().splitlines()[0]


def test_paths_and_audio_hashes_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"refuse to write column\(s\) \['source'\]"):
        guardrails.write_table(pd.DataFrame({"source": ["/data/x.wav"]}), tmp_path / "t")


def test_pseudonyms_are_salted_and_stable():
    ids = pd.Series(["zNNcSmfHhTbjLm5NcVmrOAf5C2j2", "abc"])
    a = guardrails.pseudonymise(ids, "salt1")
    assert a.tolist() == guardrails.pseudonymise(ids, "salt1").tolist()
    assert a.tolist() != guardrails.pseudonymise(ids, "salt2").tolist()
    assert all(x.startswith("p_") and len(x) == 14 for x in a)
    with pytest.raises(ValueError):
        guardrails.pseudonymise(ids, "")
