"""Peak memory of the inventory with one long recording (#12 case 7): a 10-second file vs a 1-hour one.

Builds a 4-participant demo corpus (Coswara layout) twice, once with one recording replaced by a 10-second
WAV and once by a 1-hour WAV (written in blocks, at the corpus's 48 kHz), runs ``clinical-transfer inventory``
in a child process on each and prints the child's peak RSS and the ratio. The goal: <= 1.5x. The 1-hour file
is past the default maximum duration (600 s), so the header decides and nothing is decoded.

    python benchmarks/bench_memory.py [--hours 1] [--metadata-rows 100000]

It also runs the inventory on a large ``combined_data.csv`` (100,000 extra people, none with audio, no
``--only-with-audio``): 900,000 recording rows, built column by column (a list of row dicts peaked at 2.2 GB).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from dataset_adapters.demo import DemoConfig, write_demo_corpus


def _long_wav(path: Path, seconds: float, sr: int = 48_000) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as fh:
        left = int(seconds * sr)
        while left:
            n = min(left, sr * 60)
            fh.write(0.1 * rng.standard_normal(n).astype(np.float32))
            left -= n


def _peak_rss_mb(root: Path, out: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, "-m", "clinical_transfer", "inventory", "--quiet", "--data-root", str(root),
           "--salt", "benchmark-salt-0123456789", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024  # kB -> MB (the largest child so far; the long run goes second)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--metadata-rows", type=int, default=100_000, help="participants in a large metadata file (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {}
        for name, seconds in (("10 s", 10.0), (f"{args.hours:g} h", args.hours * 3600)):
            root = write_demo_corpus(Path(tmp) / name.replace(" ", ""), DemoConfig(n_participants=4, duration_s=1.0),
                                     progress=False)
            target = next(root.rglob("counting-normal.wav"))
            _long_wav(target, seconds)
            peaks[name] = _peak_rss_mb(root, Path(tmp) / f"out_{name.replace(' ', '')}")
            print(f"inventory with one {name} recording ({target.stat().st_size / 1e6:.0f} MB): peak RSS {peaks[name]:.0f} MB",
                  flush=True)
        short, long_ = peaks.values()
        print(f"ratio {long_ / short:.2f}x (goal <= 1.5x)")
        if args.metadata_rows:  # a large combined_data.csv, most people without audio (no --only-with-audio)
            root = write_demo_corpus(Path(tmp) / "meta", DemoConfig(n_participants=4, duration_s=1.0), progress=False)
            meta = pd.read_csv(root / "combined_data.csv", dtype=str, keep_default_na=False)
            big = meta.sample(args.metadata_rows, replace=True, random_state=0).reset_index(drop=True)
            big["id"] = [f"X{i:027d}" for i in range(len(big))]
            pd.concat([meta, big]).to_csv(root / "combined_data.csv", index=False)
            size = (root / "combined_data.csv").stat().st_size / 1e6
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            peak = _peak_rss_mb(root, Path(tmp) / "out_meta")
            note = "" if peak * 1024 > before else " (at most; an earlier child was larger)"
            print(f"inventory with a {size:.0f} MB combined_data.csv ({len(big) + len(meta):,} participants, "
                  f"{9 * (len(big) + len(meta)):,} recording rows): peak RSS {peak:.0f} MB{note}")


if __name__ == "__main__":
    main()
