"""Scoring runner: recordings -> audio -> frozen encoder -> SAE codes -> per-recording aggregates.

Why it is built this way:

* **Cache first.** Every finished recording is written to the content-addressed cache at once
  (:mod:`clinical_transfer.store`), so a second run does no encoder work and a killed run resumes
  where it stopped, with a result byte-identical to an uninterrupted run.
* **Shards.** ``shard=(i, N)`` keeps the recordings whose stable hash of ``recording_id`` falls in
  shard i, so N workers on N machines (any scheduler) split a corpus; :func:`store.merge_stores` joins them.
* **Nothing silently lost.** Recordings the inventory did not pass are counted by reason in the run
  summary; the progress bar shows recordings/s and audio-seconds/s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clinical_transfer import guardrails
from clinical_transfer.audio import SourceBytes, batched_waveforms, read_files
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import sha256_text, stable_bucket
from clinical_transfer.store import AGGREGATION, FRAMES_TAG, ScoreCache, aggregate, cache_key, write_store


def sae_hash(sae) -> str:
    """SHA-256 over the SAE's configuration and every tensor's bytes."""
    h = hashlib.sha256(repr(sorted(sae.cfg.to_dict().items())).encode())
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def in_shard(recording_id: str, shard: tuple[int, int]) -> bool:
    i, n = shard
    return stable_bucket(recording_id, n) == i


@dataclass
class RunSummary:
    """What a scoring run did: counts by source and the recordings skipped, by reason."""

    scored: int = 0
    from_cache: int = 0
    """Recordings whose aggregates were already in the cache (no encoder work)."""
    encoded: int = 0
    audio_seconds: float = 0.0
    """Seconds of audio encoded in this run (cache hits excluded)."""
    skipped: dict = field(default_factory=dict)

    def text(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"scored {self.scored} recordings ({self.encoded} encoded, {self.from_cache} from cache, "
                f"{self.audio_seconds:.0f} s of audio); skipped: {skipped}")


def score_recordings(
    recordings: pd.DataFrame,
    encoder,
    sae,
    out: str | Path,
    cache_dir: str | Path,
    salt: str,
    shard: tuple[int, int] = (0, 1),
    batch: int = 16,
    progress: bool = True,
    fail_after: int | None = None,
    frame_codes: bool = False,
    reader: Callable[[Iterable[str]], Iterator[SourceBytes]] = read_files,
    sae_digest: str | None = None,
) -> RunSummary:
    """Score the ``ok`` recordings of a Recording table into a store at ``out``.

    ``reader`` turns source locators into bytes (the corpus adapter's ``read_sources`` for archive
    members; plain files by default). ``sae_digest`` is :func:`sae_hash` of ``sae`` when the caller has
    it already (hashing a 30,720-feature SAE takes seconds). ``fail_after`` raises after that many newly
    encoded recordings (an injected crash, for resume tests).
    """
    i, n = shard
    if not (0 <= i < n):
        raise ClinicalTransferError(f"shard {i}/{n} does not exist", "use --shard i/N with 0 <= i < N")
    mine = recordings[[in_shard(r, shard) for r in recordings["recording_id"].astype(str)]]
    summary = RunSummary()
    for status, cnt in mine[mine["status"] != "ok"]["status"].value_counts().sort_index().items():
        summary.skipped[str(status)] = int(cnt)
    ok = mine[mine["status"] == "ok"].copy()
    ok["pseudo_id"] = guardrails.pseudonymise(ok["recording_id"], salt, "r").to_numpy()
    ok = ok.sort_values("pseudo_id", kind="stable").reset_index(drop=True)
    cache = ScoreCache(cache_dir)
    s_hash, enc_id, d_sae = sae_digest or sae_hash(sae), encoder.id(), sae.cfg.d_sae
    agg = AGGREGATION + (FRAMES_TAG if frame_codes else "")
    keys = [cache_key(a, enc_id, encoder.layer, s_hash, agg) for a in ok["audio_sha256"]]
    results: dict[int, object] = {}
    todo = []
    for row, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None:
            results[row] = hit
            summary.from_cache += 1
        else:
            todo.append(row)
    bar = tqdm(total=len(ok), initial=len(results), desc="scoring", unit="rec", disable=None if progress else True)
    t0 = time.perf_counter()
    src_row = {ok["source"].iloc[r]: r for r in todo}

    def run(items: list[tuple[int, np.ndarray]]) -> None:
        states = encoder.hidden_states([y for _, y in items])
        for (row, y), s in zip(items, states):
            codes = sae.encode_sparse(s, sort=False)  # aggregation does not need sorted ids
            scored = aggregate(codes.indices.numpy(), codes.values.to(torch.float32).numpy(), d_sae, frame_codes)
            cache.put(keys[row], scored)
            results[row] = scored
            summary.encoded += 1
            summary.audio_seconds += len(y) / encoder.sample_rate
            if fail_after is not None and summary.encoded >= fail_after:
                raise RuntimeError(f"injected failure after {fail_after} recordings")
        bar.update(len(items))
        dt = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(rec_s=f"{summary.encoded / dt:.1f}", audio_s_per_s=f"{summary.audio_seconds / dt:.0f}")

    def vanished(src: str) -> None:
        summary.skipped["vanished since the inventory"] = summary.skipped.get("vanished since the inventory", 0) + 1

    for items in batched_waveforms(reader(list(src_row)), encoder.sample_rate, batch, vanished):
        run([(src_row[src], y) for src, y in items])
    bar.close()
    rows = sorted(results)
    index = pd.DataFrame({
        "recording_id": ok["pseudo_id"].iloc[rows].to_numpy(),
        "participant_id": guardrails.pseudonymise(ok["participant_id"].iloc[rows], salt, "p").to_numpy(),
        "segment_group": ok["segment_group"].iloc[rows].to_numpy(),
        "recording_type": ok["recording_type"].iloc[rows].to_numpy(),
        "n_frames": [results[r].n_frames for r in rows],
    })
    summary.scored = len(rows)
    manifest = {
        "encoder": encoder.name, "encoder_id": enc_id, "layer": encoder.layer,
        "layer_convention": encoder.layer_convention, "frames_per_second": encoder.frames_per_second,
        "sae_sha256": s_hash, "sae_config": sae.cfg.to_dict(), "aggregation": AGGREGATION, "shard": list(shard),
        "frame_codes": frame_codes,
        "salt_sha256": sha256_text(salt),
        "run_summary": {"scored": summary.scored, "skipped": summary.skipped},
    }
    write_store(out, index, [results[r] for r in rows], d_sae, manifest)
    return summary
