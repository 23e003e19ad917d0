"""Benchmark: the default pipeline (GE2E layer 3 + embedded TopK SAE) on the demo corpus, this CPU.

Prints audio-seconds scored per wall-second (fresh cache each run, median of several runs; includes
decoding, the encoder, the SAE and aggregation), and the SAE stage's tokens/s against a bare
``torch.matmul`` of the same shapes (tokens x 256 @ 256 x 2048) as a ratio.

    .venv/bin/python benchmarks/bench_scoring.py [--participants 40] [--repeats 3]
    .venv/bin/python benchmarks/bench_scoring.py --engine ray --participants 160   # + Ray, 1 and 2 local actors

With ``--engine ray`` it also scores the corpus on a local Ray instance (CPU actors) with 1 and 2 workers
(fresh cache each, store assembly included) and prints each against the single-process time of the same
run: on a 2-core machine expect ~1x — the point is correctness and overhead (target <= 1.3x the time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.sae.default import load_default_sae
    from clinical_transfer.scoring import score_recordings
    from dataset_adapters import get_adapter
    from dataset_adapters.demo import DemoConfig, write_demo_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", choices=["local", "ray"], default="local")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_scoring_"))
    corpus = write_demo_corpus(work / "corpus", DemoConfig(n_participants=args.participants), progress=False)
    rec = get_adapter("coswara", corpus).recordings(tag=False, progress=False)
    enc, sae = get_encoder("ge2e", layer=3), load_default_sae()
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        s = score_recordings(rec, enc, sae, work / f"store{r}", work / f"cache{r}", "bench", progress=False)
        dt = time.perf_counter() - t0
        rates.append(s.audio_seconds / dt)
    audio = s.audio_seconds
    print(f"default pipeline (decode + GE2E layer 3 + TopK SAE 256->2048 k=32 + aggregates), "
          f"{s.scored} recordings, {audio:.0f} s of audio: median {np.median(rates):.0f} audio-s per wall-s "
          f"(runs: {', '.join(f'{x:.0f}' for x in rates)}; target >= 20x real time)")

    if args.engine == "ray":
        ray_section(rec, enc, sae, work, corpus, float(np.median([audio / x for x in rates])), audio)

    x = torch.randn(100 * 60, 256)  # one minute of frames
    sae.encode_sparse(x[:256], sort=False)

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def mm():
        with torch.inference_mode():
            for lo in range(0, len(x), 1024):  # the batch encode_sparse uses
                torch.matmul(x[lo : lo + 1024], sae.W_enc)

    pairs = [(timed(lambda: sae.encode_sparse(x, sort=False)), timed(mm)) for _ in range(15)]  # interleaved
    t_sae = float(np.median([p[0] for p in pairs]))
    t_mm = float(np.median([p[1] for p in pairs]))
    print(f"SAE stage: {len(x) / t_sae:,.0f} tokens/s; torch.matmul of the same shapes: {len(x) / t_mm:,.0f} tokens/s; "
          f"ratio {t_mm / t_sae:.2f} (target >= 0.5)")


def ray_section(rec, enc, sae, work: Path, corpus: Path, local_s: float, audio: float) -> None:
    import os

    import ray

    from clinical_transfer.run.models import Models
    from clinical_transfer.run.ray_engine import RayOptions, prefill_cache
    from clinical_transfer.scoring import sae_hash, score_recordings
    from dataset_adapters import get_adapter

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    models = Models(enc, sae, "embedded", sae_hash(sae))
    reader = get_adapter("coswara", corpus).read_sources
    for workers in (1, 2):
        # leave half a core to the decoders; the actors share the rest
        opts = RayOptions(workers=workers, cpus_per_worker=max(0.25, (cores - 0.5) / workers), cpus_per_decoder=0.5)
        t0 = time.perf_counter()
        pre = prefill_cache(rec, models, work / f"ray_cache{workers}", "bench", reader, opts, batch=64)
        score_recordings(pre.recordings, enc, sae, work / f"ray_store{workers}", work / f"ray_cache{workers}", "bench",
                         progress=False)
        dt = time.perf_counter() - t0
        print(f"ray, {workers} worker(s), local instance ({cores} CPUs): {audio / dt:.0f} audio-s per wall-s; "
              f"{dt:.1f} s vs {local_s:.1f} s single-process = overhead {dt / local_s:.2f}x (target <= 1.3x)", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
