"""Shared fixtures: the real Coswara files in ../shared and small generated demo corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLINICAL_TRANSFER_SHARED", REPO.parent / "shared"))
COSWARA = SHARED / "data" / "coswara"
SAMPLE = COSWARA / "sample"
SAMPLE_ID = "zNNcSmfHhTbjLm5NcVmrOAf5C2j2"


@pytest.fixture(scope="session")
def coswara_dir() -> Path:
    if not (COSWARA / "combined_data.csv").is_file():
        pytest.fail(f"the real Coswara files are expected at {COSWARA} (../shared beside the repository)")
    return COSWARA


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory) -> Path:
    """A 24-participant demo corpus in the extracted layout (all four faults included)."""
    from dataset_adapters.demo import DemoConfig, write_demo_corpus

    return write_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", DemoConfig(n_participants=24), progress=False)


@pytest.fixture(scope="session")
def demo_small_tar(tmp_path_factory) -> Path:
    """The same corpus written as split tar parts (small parts, so members span part boundaries)."""
    from dataset_adapters.demo import DemoConfig, write_demo_corpus

    cfg = DemoConfig(n_participants=24, layout="split-tar", part_size_bytes=200_000)
    return write_demo_corpus(tmp_path_factory.mktemp("demo_tar") / "corpus", cfg, progress=False)


@pytest.fixture(scope="session")
def demo_small_recordings(demo_small):
    from dataset_adapters import get_adapter

    return get_adapter("coswara", demo_small).recordings(progress=False)


def run_demo(root: Path, config_text: str, out_name: str = "run") -> Path:
    """Write ``config_text`` under ``root`` and run ``run-overlay --demo`` with it; returns the output folder."""
    from clinical_transfer.cli import run_overlay_main

    (root / "config.toml").write_text(config_text)
    out = root / out_name
    assert run_overlay_main(["--demo", "--quiet", "--config", str(root / "config.toml"), "--out", str(out)]) == 0
    return out


def run_corpus(tmp_path: Path, dataset: str, data_root: Path, label: str, confounds: list[str], group: str,
               label_extra: str = "") -> Path:
    """Run ``run-overlay`` on a corpus fixture (embedded SAE, few permutations, no evidence packets);
    ``label_extra`` is added to the label's table. Returns the output folder."""
    from clinical_transfer.cli import run_overlay_main

    cfg = tmp_path / f"{dataset}.toml"
    cfg.write_text(f"""
[dataset]
name = "{dataset}"
data_root = "{data_root}"
[guardrails]
salt = "{dataset}-test-salt-0123456789"
[encoder]
sae = "embedded"
[analysis]
confounds = {confounds!r}
strata = {confounds[:1]!r}
permutations = 50
min_stratum = 10
evidence = false
segment_groups = ["{group}"]
[[analysis.labels]]
column = "{label}"
""".replace("'", '"') + label_extra + "\n")
    out = tmp_path / f"{dataset}_out"
    assert run_overlay_main(["--config", str(cfg), "--quiet", "--out", str(out)]) == 0
    return out
