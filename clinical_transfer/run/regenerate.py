"""Rebuild a frozen overlay from its manifest and verify it byte for byte.

Why in orchestration: regenerating re-runs the whole job (corpus -> report); reporting only freezes,
hashes and compares (:mod:`clinical_transfer.reporting.freeze`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import salt_digest
from clinical_transfer.reporting.freeze import compare, freeze, read_frozen_manifest
from clinical_transfer.run.config import RunConfig, build, validate
from clinical_transfer.run.overlay import demo_config, run_overlay
from dataset_adapters.demo import write_demo_corpus


def regenerate(frozen: str | Path, work: str | Path | None = None, progress: bool = False,
               salt: str | None = None) -> list[str]:
    """Rebuild the frozen tables from their inputs; returns the differences (empty = byte-identical)."""
    frozen = Path(frozen)
    m = read_frozen_manifest(frozen)
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="regenerate_"))
    cfg = validate(build(RunConfig, m["resolved_config"], "MANIFEST.json"), "MANIFEST.json")
    recorded = cfg.guardrails.salt
    if salt is None and m.get("demo"):
        salt = m["demo"].get("salt")  # synthetic corpus: its salt is public
    if not salt or salt_digest(salt) != recorded:
        raise ClinicalTransferError("the salt of the frozen run is needed and was not given (or does not match)",
                                    "pass --salt with the salt the run used")
    cfg.guardrails.salt = salt
    if m.get("demo"):
        cfg.dataset.data_root = str(write_demo_corpus(work / "corpus", demo_config(m["demo"]), progress=progress))
    elif not Path(cfg.dataset.data_root).is_dir():
        raise ClinicalTransferError(f"the frozen run's corpus {cfg.dataset.data_root} is not here",
                                    "place the corpus there (or edit data_root in MANIFEST.json) and run again")
    run_overlay(cfg, work / "run", progress=progress, config_source=m.get("config_source", "MANIFEST.json"),
                demo=m.get("demo"))  # a demo run keeps the embedded SAE (a real one would fit its own)
    return compare(frozen, freeze(work / "run", work / "frozen"))
