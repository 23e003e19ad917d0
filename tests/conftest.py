"""Shared fixtures: the real Coswara files in ../shared and small generated demo corpora."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# remembered file digests (clinical_transfer.hashing.file_digest) go to a throw-away folder, not ~/.cache,
# removed when the test session ends (the CLI subprocesses the tests start inherit the variable)
if "CLINICAL_TRANSFER_DIGEST_CACHE" not in os.environ:
    os.environ["CLINICAL_TRANSFER_DIGEST_CACHE"] = tempfile.mkdtemp(prefix="ct-digests-")
    atexit.register(shutil.rmtree, os.environ["CLINICAL_TRANSFER_DIGEST_CACHE"], True)

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
               label_extra: str = "", extra_args: tuple[str, ...] = ()) -> Path:
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
    assert run_overlay_main(["--config", str(cfg), "--quiet", "--out", str(out), *extra_args]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory):
    """A 6-layer random gemma4_unified model saved offline (a test double for the code path)."""
    import torch
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    cfg = Gemma4UnifiedConfig(
        text_config=dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         intermediate_size=37, vocab_size=99, num_hidden_layers=6,
                         layer_types=["sliding_attention"] * 5 + ["full_attention"], sliding_window=512,
                         max_position_embeddings=512, bos_token_id=2, pad_token_id=0),
        audio_config={"audio_embed_dim": 32}, vision_config=None, audio_token_id=7, boa_token_id=5,
        eoa_token_index=6, image_token_id=8, video_token_id=9)
    torch.manual_seed(0)
    model = Gemma4UnifiedForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("gemma")
    model.save_pretrained(path)
    return path, model
