"""The inventory stage of a run: read the corpus, account for every recording, write what was found.

Why a stage of its own: it is the first thing every run does and the first thing a reader of a report
checks (inclusion/exclusion counts with reasons). Outputs carry pseudonymous ids only, no paths, no
audio hashes, no per-person labels.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path

import pandas as pd

from clinical_transfer import __version__, guardrails
from clinical_transfer.audio import AudioCheckConfig
from clinical_transfer.run.config import RunConfig
from clinical_transfer.taxonomy import STATUSES
from dataset_adapters import Adapter, get_adapter
from dataset_adapters.base import adapter_class
from dataset_adapters.inventory import status_counts, tag_agreement_summary

#: Columns of the written inventory (pseudonymised ids; no labels, paths or hashes).
PUBLIC_INVENTORY_COLUMNS = (
    "recording_id", "participant_id", "recording_type", "segment_group", "task", "status", "status_reason",
    "sample_rate_hz", "duration_s", "rms_dbfs", "silence_fraction", "quality", "tag", "tag_agreement", "wave",
)


@dataclass
class InventoryResult:
    """What the inventory found: the Recording table and the counts a report opens with."""

    recordings: pd.DataFrame
    """The full Recording table (raw ids; stays in memory, never written as is)."""
    counts: pd.DataFrame
    agreement: pd.DataFrame
    adapter: Adapter
    """The corpus adapter, whose ``read_sources`` gives the bytes of each recording to the encoder."""
    notes: list[str] = field(default_factory=list)

    def excluded(self) -> pd.DataFrame:
        """Recordings not analysed, by segment group, status and reason (the not-``ok`` rows of ``counts``)."""
        return self.counts[self.counts["status"] != "ok"].reset_index(drop=True)


def public_inventory(recordings: pd.DataFrame, salt: str) -> pd.DataFrame:
    """The inventory as it may be written: pseudonymous ids and recording-level facts only."""
    out = recordings[list(PUBLIC_INVENTORY_COLUMNS)].copy()
    out["recording_id"] = guardrails.pseudonymise(recordings["recording_id"], salt, "r")
    out["participant_id"] = guardrails.pseudonymise(recordings["participant_id"], salt, "p")
    return out


def run_inventory(cfg: RunConfig, out: Path, progress: bool = True, workers: int | None = None) -> InventoryResult:
    """Build the Recording table for ``cfg.dataset`` and write the inventory under ``out``.

    ``workers``: processes for the content check (None: every core); the table does not depend on it,
    so it is not part of the config (or of any digest). Checks are cached in ``out/../.inventory_cache``.
    """
    guardrails.check_salt(cfg.guardrails.salt)  # before the corpus is read: every run starts here
    ds = cfg.dataset
    options = {"only_with_audio": ds.only_with_audio,
               "audio_check": AudioCheckConfig(min_duration_s=cfg.audio.min_duration_s,
                                               silent_peak_dbfs=cfg.audio.silent_peak_dbfs,
                                               max_duration_s=cfg.audio.max_duration_s)}
    if ds.metadata_root:
        options["metadata_root"] = ds.metadata_root
    if "inspect_cache" in signature(adapter_class(ds.name)).parameters:  # parallel, cached content check
        options.update(workers=workers, inspect_cache=out.parent / ".inventory_cache")
    adapter = get_adapter(ds.name, ds.data_root, **options)
    recordings = adapter.recordings(progress=progress)
    result = InventoryResult(recordings, status_counts(recordings), tag_agreement_summary(recordings), adapter,
                             list(getattr(adapter, "notes", [])))
    salt = cfg.guardrails.salt
    guardrails.write_table(public_inventory(recordings, salt), out / "inventory")
    guardrails.write_table(result.counts, out / "inventory_counts")
    guardrails.write_table(result.agreement, out / "tag_agreement")
    guardrails.write_json(
        {
            "config": cfg.public_dict(), "config_sha256": cfg.digest(), "clinical_transfer": __version__,
            "python": platform.python_version(), "pandas": pd.__version__,
            "n_participants": int(recordings["participant_id"].nunique()),
            "n_recordings": len(recordings), "notes": result.notes,
        },
        out / "manifest.json",
    )
    return result


def summary_text(result: InventoryResult) -> str:
    """Plain-text summary for the terminal and the Markdown report."""
    r = result.recordings
    lines = [f"participants: {r['participant_id'].nunique()}   recordings expected: {len(r)}"]
    by_status = r["status"].value_counts()
    extra = sorted(set(by_status.index) - set(STATUSES))  # a corpus's own (COUGHVID: excluded by its classifier)
    lines.append("status: " + ", ".join(f"{k} {int(by_status.get(k, 0))}" for k in (*STATUSES, *extra)))
    bad = result.excluded()
    if len(bad):
        lines.append("not ok, by reason:")
        for group, status, reason, n in bad.itertuples(index=False):
            lines.append(f"  {group:16s} {status:11s} {n:6d}  {reason}")
    if len(result.agreement):
        lines.append("content tag agrees with declared segment group (ok recordings):")
        for _, row in result.agreement.iterrows():
            lines.append(f"  {row['segment_group']:16s} {row['agreement']:.1%} of {int(row['n'])}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
