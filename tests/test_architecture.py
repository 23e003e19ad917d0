"""The orchestration floor: defaults per corpus, config values checked at load, registries, purity."""

import subprocess
import sys
from dataclasses import asdict

import pytest

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.run.commands import DataOptions, resolve_config
from clinical_transfer.run.config import load_config
from clinical_transfer.stats import OverlayConfig, overlay
from clinical_transfer.taxonomy import SEGMENT_GROUPS
from dataset_adapters.segments import SEGMENT_TYPES
from tests.conftest import REPO
from tests.stats_data import clustered_table


def test_dataset_alone_runs_the_corpus_default_config(tmp_path):
    cfg, source = resolve_config(DataOptions(dataset="coswara", data_root=str(tmp_path), salt="a-private-salt-0123456789"))
    assert source.endswith("configs/coswara.toml")
    assert [lab.column for lab in cfg.analysis.labels] == ["covid_status", "asthma", "smoker", "cough"]
    assert cfg.analysis.confounds == ["age", "sex", "wave", "english_proficiency"]


def test_the_placeholder_salt_of_the_shipped_config_is_refused(tmp_path):
    with pytest.raises(ClinicalTransferError, match="the salt is the shipped placeholder"):
        resolve_config(DataOptions(dataset="coswara", data_root=str(tmp_path)))


@pytest.mark.parametrize("toml, problem", [
    ("[analysis]\naggregation = 'meen'\n", "[analysis] aggregation in"),
    ("[analysis]\nalpha = 7.5\n", "[analysis] alpha in"),
    ("[analysis]\nsegment_groups = ['vowel', 'vowels']\n", "[analysis] segment_groups entry in"),
    ("[analysis]\npermutations = -3\n", "[analysis] permutations in"),
    ("[guardrails]\nmin_cell = 1\n", "[guardrails] min_cell in"),
    ("[encoder]\nname = 'whisper'\n", "[encoder] name in"),
    ("[dataset]\nname = 'coughvid2'\n", "[dataset] name in"),
])
def test_config_values_are_checked_at_load(tmp_path, toml, problem):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ClinicalTransferError) as err:
        load_config(path)
    assert err.value.problem.startswith(problem)


def test_overlay_never_changes_the_callers_config():
    features, meta = clustered_table(n_participants=60, m=4)
    cfg = OverlayConfig(permutations=0, positive_controls=[])
    before = asdict(cfg)
    overlay(features, meta, "st", confounds=["age", "sex"], config=cfg, min_stratum=10)
    assert asdict(cfg) == before


def test_every_segment_rule_names_a_known_group():
    assert {t.segment_group for t in SEGMENT_TYPES.values()} <= set(SEGMENT_GROUPS)


def test_python_dash_m_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "clinical_transfer", "datasets"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert done.stdout.startswith("coswara\tCC BY 4.0\t")


def test_sae_formats_are_a_registry(tmp_path):
    from clinical_transfer.sae.formats import FORMATS, detect_format

    assert [f.name for f in FORMATS] == ["saelens", "sparsify", "dictionary_learning", "pt"]
    (tmp_path / "sae.safetensors").write_bytes(b"")
    assert detect_format(tmp_path).name == "sparsify"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClinicalTransferError, match="holds no SAE checkpoint I know"):
        detect_format(tmp_path / "empty")
