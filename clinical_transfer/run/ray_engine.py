"""``--engine ray``: score a corpus on a Ray cluster (many GPUs and machines) into the same cache.

Why Ray Data and not a scheduler of our own: batch inference of a model over files — CPU decoding
feeding accelerator actors, retries, backpressure — is exactly what it does. The pipeline:

    cache misses (filtered on the driver) -> ray.data.from_items
      -> map_batches(_decode)            CPU tasks: bytes -> mono waveforms; undecodable -> a reason
      -> map_batches(_ScoreActor)         actor pool, one encoder + SAE load per actor (num_gpus each on
                                          a GPU cluster); each finished recording goes straight into the
                                          content-addressed cache
    -> the driver assembles the store with the single-process code (every recording is now a cache hit),
       so the store is byte-identical to a single-process run's.

Failures: actors are restarted (``max_restarts``) and their batches retried (``max_task_retries``) a
bounded number of times — a lost worker loses only its unfinished recordings, which the retry or a
re-run redoes; a recording that fails deterministically (cannot be decoded) is recorded once with its
reason and never retried. The cache and the outputs must be on storage every node sees.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.scoring import plan_scoring, score_host, score_recordings

#: Actor restarts and per-batch retries (explicit, so a deterministic crash cannot loop forever).
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3


@dataclass
class RayOptions:
    """Where and how wide (the ``--ray-address/--workers/--gpus-per-worker/--cpus-per-decoder`` flags)."""

    address: str | None = None
    """``auto`` (a running cluster), ``HOST:PORT``, or None: start a local instance."""
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    """CPUs reserved per encoder actor (an actor holds them for the whole run: on a small local
    instance leave room for the decoders, e.g. 0.5 each on 2 cores)."""
    cpus_per_decoder: float = 1.0
    num_cpus: int | None = None
    """Only for a local instance (tests: 2)."""
    kill_after: int | None = None
    """Tests only: the first actor to finish this many recordings dies once (a lost worker)."""
    kill_marker: str | None = None
    """Tests only: the file that makes the injected death happen once."""


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise ClinicalTransferError(
            "--engine ray needs Ray, which is not installed",
            "pip install 'clinical-transfer[cluster]' (ray[data]); or leave --engine at local") from exc
    return ray


def _sae_bytes(sae) -> bytes:
    buf = io.BytesIO()
    torch.save({"cfg": sae.cfg.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in sae.state_dict().items()}}, buf)
    return buf.getvalue()


def _decode(batch: dict, reader, sample_rate: int) -> dict:
    """CPU task: bytes of each source -> waveform, or a reason (never raised: a deterministic failure
    must not be retried)."""
    from clinical_transfer.audio import load_mono

    sources = [str(s) for s in batch["source"]]
    data = dict(reader(sources))
    waves, reasons = [], []
    for src in sources:
        blob = data.get(src)
        if blob is None:
            waves.append(np.zeros(0, np.float32))
            reasons.append("vanished since the inventory")
            continue
        try:
            waves.append(load_mono(blob, sample_rate)[0].astype(np.float32))
            reasons.append("")
        except Exception as exc:  # noqa: BLE001 - recorded with its reason, not retried
            waves.append(np.zeros(0, np.float32))
            reasons.append(f"undecodable: {type(exc).__name__}")
    return {"key": np.asarray(batch["key"]), "reason": np.asarray(reasons, dtype=object),
            "waveform": np.asarray(waves + [None], dtype=object)[:-1]}


class _ScoreActor:
    """One encoder + SAE per actor; scores a batch and writes each recording into the cache."""

    def __init__(self, encoder: dict, sae: bytes, cache_dir: str, frame_codes: bool,
                 kill_after: int | None = None, kill_marker: str | None = None, threads: int = 1):
        from clinical_transfer.encoders import get_encoder
        from clinical_transfer.sae import SAEConfig, SparseAutoencoder
        from clinical_transfer.store import ScoreCache

        torch.set_num_threads(max(1, threads))  # the CPUs reserved for this actor, no more
        self.encoder = get_encoder(encoder["name"], model=encoder.get("model") or None, layer=encoder["layer"],
                                   device=encoder.get("device", "cpu"))
        blob = torch.load(io.BytesIO(sae), weights_only=True)
        self.sae = SparseAutoencoder(SAEConfig(**blob["cfg"]))
        self.sae.load_state_dict(blob["state_dict"])
        self.sae.eval()
        self.cache = ScoreCache(cache_dir)
        self.frame_codes = frame_codes
        self.kill_after, self.kill_marker, self.done = kill_after, kill_marker, 0

    def __call__(self, batch: dict) -> dict:
        keys, reasons = list(batch["key"]), list(batch["reason"])
        good = [i for i, r in enumerate(reasons) if not r]
        scored = score_host(self.encoder, self.sae, [np.asarray(batch["waveform"][i], np.float32) for i in good],
                            self.frame_codes) if good else []
        seconds = np.zeros(len(keys))
        for i, s in zip(good, scored):
            self.cache.put(str(keys[i]), s)
            seconds[i] = len(batch["waveform"][i]) / self.encoder.sample_rate
            self.done += 1
            if self.kill_after is not None and self.done >= self.kill_after and self.kill_marker \
                    and not os.path.exists(self.kill_marker):  # injected once: a worker lost mid-run (tests)
                Path(self.kill_marker).write_text("killed")
                os._exit(1)
        return {"key": np.asarray(keys), "reason": np.asarray(reasons, dtype=object), "audio_s": seconds}


def score_corpus(recordings: pd.DataFrame, models, out: Path, cache_dir: Path, salt: str, reader, engine: str = "local",
                 ray_options: RayOptions | None = None, shard: tuple[int, int] = (0, 1), batch: int = 16,
                 frame_codes: bool = False, progress: bool = True, sae_precision: str = "fp32"):
    """Score a corpus into a store on either engine (``extract`` and ``run-overlay`` both call this).

    ``ray``: the actors fill the cache first; the store is then assembled by the single-process
    :func:`~clinical_transfer.scoring.score_recordings` (all cache hits), and the summary counts what
    the actors encoded as encoded, not as cache hits.
    """
    pre = None
    if engine == "ray":
        if sae_precision != "fp32":
            raise ClinicalTransferError("--engine ray runs the SAE in fp32 (for now)",
                                        "drop --sae-precision, or use --engine local")
        pre = prefill_cache(recordings, models, cache_dir, salt, reader, ray_options or RayOptions(), shard,
                            frame_codes, batch)
        recordings = pre.recordings
    summary = score_recordings(recordings, models.encoder, models.sae, out, cache_dir, salt, shard, batch=batch,
                               progress=progress, frame_codes=frame_codes, reader=reader, sae_digest=models.sae_digest,
                               sae_precision=sae_precision)
    if pre is not None:
        summary.encoded += pre.encoded
        summary.from_cache -= pre.encoded
        summary.audio_seconds += pre.audio_seconds
    return summary


def encode_misses(plan_ok: pd.DataFrame, keys: list[str], missing: list[int], encoder_spec: dict, sae, cache_dir: Path,
                  reader, sample_rate: int, frame_codes: bool, opts: RayOptions, batch: int = 16,
                  kill_after: int | None = None, kill_marker: str | None = None) -> tuple[dict[str, str], int, float]:
    """Encode the cache misses on Ray; returns ({recording key: reason} of those that failed, the number
    encoded, their audio seconds)."""
    ray = _ray()
    if not missing:
        return {}, 0, 0.0
    if not ray.is_initialized():
        kwargs = {"address": opts.address} if opts.address else {"num_cpus": opts.num_cpus}
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"key": keys[r], "source": str(plan_ok["source"].iloc[r])} for r in missing]
    ds = ray.data.from_items(items)
    ds = ds.map_batches(_decode, fn_kwargs={"reader": reader, "sample_rate": sample_rate}, batch_size=batch,
                        num_cpus=opts.cpus_per_decoder, batch_format="numpy")
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for these yet (deprecation until 2.64)
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(_ScoreActor, fn_constructor_kwargs={
            "encoder": encoder_spec, "sae": _sae_bytes(sae), "cache_dir": str(cache_dir), "frame_codes": frame_codes,
            "kill_after": kill_after, "kill_marker": kill_marker, "threads": max(1, round(opts.cpus_per_worker))},
            batch_size=batch, compute=ray.data.ActorPoolStrategy(size=opts.workers), num_cpus=opts.cpus_per_worker,
            num_gpus=opts.gpus_per_worker or None, batch_format="numpy",
            max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
    failed: dict[str, str] = {}
    done, seconds = set(), 0.0
    for out in ds.iter_batches(batch_format="numpy", batch_size=None):
        for k, r, a in zip(out["key"], out["reason"], out["audio_s"]):
            if r:
                failed[str(k)] = str(r)
            elif str(k) not in done:  # a retried batch can report a recording twice
                done.add(str(k))
                seconds += float(a)
    return failed, len(done), seconds


@dataclass
class Prefill:
    recordings: pd.DataFrame
    """The Recording table with Ray's deterministic failures marked ``unreadable`` (with their reason)."""
    encoded: int
    audio_seconds: float


def prefill_cache(recordings: pd.DataFrame, models, cache_dir: Path, salt: str, reader, opts: RayOptions,
                  shard: tuple[int, int] = (0, 1), frame_codes: bool = False, batch: int = 16,
                  kill_after: int | None = None, kill_marker: str | None = None) -> Prefill:
    """Fill the score cache on Ray, ready for the single-process assembly of the store."""
    from clinical_transfer.store import ScoreCache

    plan = plan_scoring(recordings, models.encoder, models.sae, salt, shard, frame_codes, models.sae_digest)
    cache = ScoreCache(cache_dir)
    missing = [r for r, k in enumerate(plan.keys) if not cache.path(k).is_file()]
    enc = models.encoder
    spec = {"name": enc.name, "model": str(getattr(enc, "model_path", "") or ""), "layer": enc.layer,
            "device": "cuda" if opts.gpus_per_worker else "cpu"}
    failed, n, seconds = encode_misses(plan.ok, plan.keys, missing, spec, models.sae, cache_dir, reader, enc.sample_rate,
                                       frame_codes, opts, batch, kill_after or opts.kill_after,
                                       kill_marker or opts.kill_marker)
    if not failed:
        return Prefill(recordings, n, seconds)
    bad = {plan.ok["recording_id"].iloc[r]: failed[k] for r, k in enumerate(plan.keys) if k in failed}
    out = recordings.copy()
    hit = out["recording_id"].isin(list(bad))
    out.loc[hit, "status"] = "unreadable"
    out.loc[hit, "status_reason"] = out.loc[hit, "recording_id"].map(bad)
    return Prefill(out, n, seconds)
