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
import os
import queue
import threading
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
from clinical_transfer.store import (
    AGGREGATION,
    FRAMES_TAG,
    RecordingScores,
    ScoreCache,
    aggregate,
    cache_key,
    write_store,
)


def sae_hash(sae) -> str:
    """SHA-256 over the SAE's configuration and every tensor's bytes."""
    h = hashlib.sha256(repr(sorted(sae.cfg.to_dict().items())).encode())
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def aggregate_codes(indices: torch.Tensor, values: torch.Tensor, lengths: list[int], d_sae: int,
                    keep_frames: bool = False) -> list[RecordingScores]:
    """:func:`~clinical_transfer.store.aggregate` for many recordings at once, on the codes' device.

    ``indices``/``values`` (N, k) are the TopK codes of the recordings' frames stacked in order,
    ``lengths`` their frame counts. Why on the device: the codes of a 30,720-feature SAE are 256 bytes
    per frame and per slot; the aggregates of a recording are a few KB. Only those (and frame codes if
    asked for) cross to the host.

    Equal byte for byte to :func:`~clinical_transfer.store.aggregate`: each (recording, feature) key's
    values are summed in float64 in frame order (a stable sort, then one sequential segment sum per
    key — no atomics, so also deterministic on a GPU), and the divisions and casts are numpy's, as there.
    """
    dev = indices.device
    n_rec = len(lengths)
    rec = torch.repeat_interleave(torch.arange(n_rec, device=dev), torch.as_tensor(lengths, device=dev))
    key = (rec[:, None] * d_sae + indices.long()).reshape(-1)
    val = values.reshape(-1).to(torch.float64)
    keep = val > 0
    key, val = key[keep], val[keep]
    key, order = torch.sort(key, stable=True)
    val = val[order]
    uniq, counts = torch.unique_consecutive(key, return_counts=True)
    if len(uniq):
        total = torch.segment_reduce(val, "sum", lengths=counts)
        peak = torch.segment_reduce(val, "max", lengths=counts)
    else:
        total = peak = val
    uniq, counts, total, peak = (t.cpu().numpy() for t in (uniq, counts, total, peak))
    if keep_frames:
        frame_idx, frame_val = indices.cpu().numpy(), values.to(torch.float32).cpu().numpy()
    owner = uniq // d_sae
    bounds = np.searchsorted(owner, np.arange(n_rec + 1))
    out, start = [], 0
    for r, T in enumerate(lengths):
        sl = slice(bounds[r], bounds[r + 1])
        n = max(int(T), 1)
        frames = (frame_idx[start : start + T].astype(np.uint16 if d_sae <= 65536 else np.int32),
                  frame_val[start : start + T].astype(np.float16)) if keep_frames else (None, None)
        out.append(RecordingScores((uniq[sl] % d_sae).astype(np.int32), (total[sl] / n).astype(np.float32),
                                   (counts[sl] / n).astype(np.float32), peak[sl].astype(np.float32), int(T), *frames))
        start += int(T)
    return out


def on_device_sae(sae, device: torch.device):
    """The SAE on ``device`` (a copy when it is elsewhere: the caller's module is left where it was)."""
    if sae.W_enc.device == device:
        return sae
    copy = type(sae)(sae.cfg, dtype=sae.W_enc.dtype, device=device)
    copy.load_state_dict(sae.state_dict())
    return copy.eval()


class _Prefetch:
    """Run an iterator in a background thread, a bounded number of items ahead.

    Why: decoding and resampling run on the CPU while the accelerator encodes the previous batch, so the
    GPU does not wait on the disk; the bound keeps memory flat. Errors are re-raised in the consumer.
    """

    _DONE = object()

    def __init__(self, iterator, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(("error", exc))

    def __iter__(self):
        try:
            while True:
                kind, item = self._q.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            self._stop.set()


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
    seconds: dict = field(default_factory=dict)
    """Wall time by stage: waiting for audio, encoder, SAE + aggregation, cache writes (the GPU is
    synchronised after the encoder so the split is real)."""

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

    device_states = getattr(encoder, "device_hidden_states", None)
    dev = getattr(encoder, "device", torch.device("cpu"))
    dev = torch.device(dev) if not isinstance(dev, torch.device) else dev
    sae_run = on_device_sae(sae, dev) if device_states is not None else sae
    clock = {"wait_audio": 0.0, "encoder": 0.0, "sae_aggregate": 0.0, "cache_write": 0.0}

    def tick(stage: str, since: float) -> float:
        now = time.perf_counter()
        clock[stage] += now - since
        return now

    def run(items: list[tuple[int, np.ndarray]]) -> None:
        t = time.perf_counter()
        if device_states is not None:  # SAE and aggregation on the encoder's device; only aggregates come back
            states = device_states([y for _, y in items])
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = tick("encoder", t)
            x = torch.cat(states) if states else torch.zeros(0, encoder.width, device=dev)
            codes = sae_run.encode_sparse(x.to(sae_run.W_enc.dtype), batch_size=8192 if dev.type == "cuda" else 1024,
                                          sort=False)
            scored_all = aggregate_codes(codes.indices, codes.values, [len(st) for st in states], d_sae, frame_codes)
        else:
            states = encoder.hidden_states([y for _, y in items])
            t = tick("encoder", t)
            scored_all = []
            for st in states:
                codes = sae.encode_sparse(st, sort=False)  # aggregation does not need sorted ids
                scored_all.append(aggregate(codes.indices.numpy(), codes.values.to(torch.float32).numpy(), d_sae,
                                            frame_codes))
        t = tick("sae_aggregate", t)
        for (row, y), scored in zip(items, scored_all):
            cache.put(keys[row], scored)
            results[row] = scored
            summary.encoded += 1
            summary.audio_seconds += len(y) / encoder.sample_rate
            if fail_after is not None and summary.encoded >= fail_after:
                raise RuntimeError(f"injected failure after {fail_after} recordings")
        tick("cache_write", t)
        bar.update(len(items))
        dt = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(rec_s=f"{summary.encoded / dt:.1f}", audio_s_per_s=f"{summary.audio_seconds / dt:.0f}")

    def vanished(src: str) -> None:
        summary.skipped["vanished since the inventory"] = summary.skipped.get("vanished since the inventory", 0) + 1

    on_gpu = device_states is not None and dev.type != "cpu"
    # on a GPU: hand the encoder >= 256 clips at a time (it plans its own token-budget passes) and decode
    # them on several threads while it works on the previous ones
    chunk, threads = (max(batch, 256), min(8, os.cpu_count() or 1)) if on_gpu else (batch, 1)
    waiting = time.perf_counter()
    for items in _Prefetch(batched_waveforms(reader(list(src_row)), encoder.sample_rate, chunk, vanished, threads)):
        tick("wait_audio", waiting)
        run([(src_row[src], y) for src, y in items])
        waiting = time.perf_counter()
    summary.seconds = {k: round(v, 3) for k, v in clock.items()}
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
