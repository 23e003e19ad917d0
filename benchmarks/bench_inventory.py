"""Benchmark: the inventory's content check (decode, measures, the acoustic tagger) on this machine.

Prints, for a demo corpus in Coswara's layout (8 s clips at 48 kHz, as Coswara records them): the
serial cost per recording, the process pool's first use (which pays the fork server's start: imports and
a warm-up check), a second pool with the server up, and a re-run from the cache by audio hash — each as a
ratio to serial. #16 asks for >= 10x on 16 cores; on the 2-core CI machine the pool can give at most ~2x,
so read the per-recording cost and the fixed start cost, not the ratio, there.

    .venv/bin/python benchmarks/bench_inventory.py [--participants 40] [--workers N]

Also prints the time to import the checks in a fresh interpreter (what the fork server pays once).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from dataset_adapters.coswara import CoswaraAdapter
    from dataset_adapters.demo import DemoConfig, write_demo_corpus
    from dataset_adapters.inventory import default_workers

    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=40)
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: every core, at most 16)")
    args = ap.parse_args()
    workers = args.workers or default_workers()
    work = Path(tempfile.mkdtemp(prefix="bench_inventory_"))
    corpus = write_demo_corpus(work / "corpus", DemoConfig(n_participants=args.participants, duration_s=8.0,
                                                           sample_rate_hz=48000), progress=False)

    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dataset_adapters._inspect_worker"], check=True)
    boot = time.perf_counter() - t

    def timed(n_workers: int | None, cache: Path | None) -> tuple[float, int]:
        t0 = time.perf_counter()
        table = CoswaraAdapter(corpus, workers=n_workers, inspect_cache=cache).recordings(progress=False)
        return time.perf_counter() - t0, len(table)

    # the pool first (it pays the fork server's start), then serial warm, then a second pool, then the cache
    first, n = timed(workers, work / "cache")
    serial, _ = timed(1, None)
    server_up, _ = timed(workers, work / "cache2")
    cached, _ = timed(workers, work / "cache")
    print(f"inventory of {n} recordings (8 s at 48 kHz), {workers} workers on {os.cpu_count()} cores:")
    print(f"  serial           {serial:6.2f} s  ({1000 * serial / n:.1f} ms per recording)")
    print(f"  pool, first use  {first:6.2f} s  {serial / first:5.1f}x serial  (fork server start included)")
    print(f"  pool, server up  {server_up:6.2f} s  {serial / server_up:5.1f}x serial")
    print(f"  from the cache   {cached:6.2f} s  {serial / cached:5.1f}x serial")
    print(f"  importing the checks in a fresh interpreter (the fork server's start): {boot:.2f} s")


if __name__ == "__main__":
    main()
