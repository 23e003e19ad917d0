"""Bad input: one clear error that names the problem and the fix (never a traceback)."""

import shutil

import pytest

from clinical_transfer.cli import main, run_overlay_main
from clinical_transfer.errors import ClinicalTransferError
from dataset_adapters import get_adapter


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ClinicalTransferError) as e:
        get_adapter("coswaraa", tmp_path)
    assert str(e.value) == ("unknown dataset 'coswaraa'. Fix: use one of: "
                            "coswara, coughvid, hf-folder, icbhi, manifest, ukcovid.")


def test_data_root_that_is_not_coswara(tmp_path):
    (tmp_path / "something.txt").write_text("hello")
    with pytest.raises(ClinicalTransferError) as e:
        get_adapter("coswara", tmp_path)
    assert str(e.value).startswith(f"{tmp_path} is not a Coswara layout: combined_data.csv is missing. Fix: point")


def test_missing_data_root(tmp_path):
    with pytest.raises(ClinicalTransferError, match="does not exist"):
        get_adapter("coswara", tmp_path / "nope")


def test_missing_metadata_csv_in_a_corpus_copy(demo_small, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(demo_small, copy)
    (copy / "combined_data.csv").unlink()
    with pytest.raises(ClinicalTransferError, match="combined_data.csv is missing"):
        get_adapter("coswara", copy)


def test_malformed_metadata_csv(tmp_path):
    (tmp_path / "combined_data.csv").write_text("user,age\nx,3\n")
    (tmp_path / "2020").mkdir()
    with pytest.raises(ClinicalTransferError) as e:
        get_adapter("coswara", tmp_path).metadata()
    assert "has no 'id', 'a', 'g' columns (found: user, age" in str(e.value)


def test_metadata_without_audio(tmp_path, demo_small):
    shutil.copy(demo_small / "combined_data.csv", tmp_path / "combined_data.csv")
    with pytest.raises(ClinicalTransferError, match="no Coswara recordings under"):
        get_adapter("coswara", tmp_path).recordings(progress=False)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    code = main(["inventory", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), "--salt", "test-salt-0123456789"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Fix: " in err


def test_run_overlay_without_data_root_points_to_coswara_and_demo(tmp_path, capsys):
    code = run_overlay_main(["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "github.com/iiscleap/Coswara-Data" in err and "tar.gz.aa" in err and "run-overlay --demo" in err


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[guardrails]\nsalt = 'test-salt-0123456789'\nmincell = 3\n")
    code = main(["inventory", "--config", str(cfg), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "unknown key(s) mincell" in capsys.readouterr().err
