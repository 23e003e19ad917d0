"""Frozen overlay tables: the shipped demo regenerates byte-identical; a changed table is reported."""

import json
import shutil

import pytest

from clinical_transfer.cli import main
from tests.conftest import REPO

FROZEN = REPO / "reports" / "frozen" / "demo"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("regen")


def test_shipped_frozen_demo_regenerates_byte_identical(work, capsys):
    assert (FROZEN / "MANIFEST.json").is_file()
    code = main(["regenerate", str(FROZEN), "--quiet", "--work", str(work / "a")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "byte-identical tables regenerated" in out


def test_a_changed_table_is_reported(work, tmp_path, capsys):
    copy = tmp_path / "demo"
    shutil.copytree(FROZEN, copy)
    table = copy / "st.csv"
    lines = table.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if ",target," in line and "robust correlate" in line)
    lines[i] = lines[i].replace("robust correlate", "not significant")
    table.write_text("\n".join(lines) + "\n")
    code = main(["regenerate", str(copy), "--quiet", "--work", str(work / "b")])
    out = capsys.readouterr().out
    assert code == 1 and "DIFFERS st.csv: differs" in out and "2 difference(s)" in out
    assert "DIFFERS st.csv: changed since it was frozen" in out


def test_planted_st_features_are_seed_stable_and_the_dictionary_has_an_unstable_tail():
    """#13: the embedded SAE's features that carry the planted `st` effect come back when the SAE is refit
    with other seeds (stability >= 0.8), while its dictionary as a whole shows the unstable tail."""
    import numpy as np
    import pandas as pd

    from clinical_transfer.sae.default import default_stability

    stability = default_stability()
    st = pd.read_csv(FROZEN / "st.csv", comment="#")
    planted = st[(st["role"] == "target") & st["segment_group"].isin(["vowel", "prompted_speech"])
                 & (st["verdict"] == "robust correlate")]
    ids = planted["feature"].str.removeprefix("feature_").astype(int).to_numpy()
    assert len(ids) >= 5
    assert np.median(stability[ids]) >= 0.8, stability[ids]
    assert (stability < 0.5).mean() >= 0.05  # the tail: features one seed found and the others did not


def test_a_damaged_frozen_folder_is_one_clear_error(tmp_path):
    """regenerate and replicate read a frozen folder through one checked reader: no MANIFEST.json, an
    invalid or incomplete one, a table without its columns — each one line, never a JSON or KeyError
    traceback (regenerate and replicate both raised one on an invalid MANIFEST.json before)."""
    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.reporting.freeze import read_frozen_manifest
    from clinical_transfer.run.replicate import ReplicationSpec, _read_frozen

    fix = "Fix: restore it from version control, or freeze the run again."
    empty, bad, thin, cut = (tmp_path / n for n in ("empty", "bad", "thin", "cut"))
    empty.mkdir()
    for folder in (bad, thin, cut):
        shutil.copytree(FROZEN, folder)
    (bad / "MANIFEST.json").write_text("{")
    (thin / "MANIFEST.json").write_text(json.dumps({"inputs": {}}))
    (cut / "st.csv").write_text("x,y\n1,2\n")
    cases = {empty: f"{empty} is not a frozen overlay (no MANIFEST.json). Fix: pass a folder under reports/frozen/ "
                    "(written by `clinical-transfer freeze`).",
             bad: f"the frozen overlay {bad} is damaged or incomplete: MANIFEST.json: Expecting property name enclosed "
                  f"in double quotes: line 1 column 2 (char 1). {fix}",
             thin: f"the frozen overlay {thin} is damaged or incomplete: MANIFEST.json lacks resolved_config, "
                   f"tables_sha256. {fix}"}
    for folder, message in cases.items():
        with pytest.raises(ClinicalTransferError) as e:
            read_frozen_manifest(folder)
        assert str(e.value) == message
        with pytest.raises(ClinicalTransferError) as e:
            _read_frozen(ReplicationSpec(folder, "st"))
        assert str(e.value) == message
    with pytest.raises(ClinicalTransferError) as e:
        _read_frozen(ReplicationSpec(cut, "st"))
    assert str(e.value) == f"the frozen overlay {cut} is damaged or incomplete: st.csv lacks the column(s) feature, " \
                           f"label, role, verdict. {fix}"
