"""Peak memory of the inventory with one long recording (#12 case 7): a 10-second file vs a 1-hour one.

Builds a 4-participant demo corpus (Coswara layout) twice, once with one recording replaced by a 10-second
WAV and once by a 1-hour WAV (written in blocks, at the corpus's 48 kHz), runs ``clinical-transfer inventory``
in a child process on each and prints the child's peak RSS and the ratio. The goal: <= 1.5x. The 1-hour file
is past the default maximum duration (600 s), so the header decides and nothing is decoded.

    python benchmarks/bench_memory.py [--hours 1] [--metadata-rows 1500000] [--no-extract]

A third corpus has a 9.5-minute recording, just under the maximum: decoded, its measures and content tag
computed in blocks (2.8 GB before, whole-signal framing and FFTs); ``extract`` is measured on it too.

It also runs the inventory on a large ``combined_data.csv`` (1.5 million extra people, none with audio: ~190 MB,
the size of the issue's 200 MB file that passed 8.9 GB): with ``--only-with-audio`` (the metadata is read in
chunks, only the people with audio kept) and without it (refused in one line once more than
``MAX_LISTED_WITHOUT_AUDIO`` people would be listed with 9 absent recordings each). Both print peak RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from dataset_adapters.coswara import MAX_LISTED_WITHOUT_AUDIO
from dataset_adapters.demo import DemoConfig, write_demo_corpus


def _long_wav(path: Path, seconds: float, sr: int = 48_000) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as fh:
        left = int(seconds * sr)
        while left:
            n = min(left, sr * 60)
            fh.write(0.1 * rng.standard_normal(n).astype(np.float32))
            left -= n


def _peak_rss_mb(root: Path, out: Path, *extra: str, refused: bool = False, command: str = "inventory") -> float:
    """Peak RSS of one ``inventory`` (or ``extract``) child, its own and its workers' (``wait4``). With
    ``refused`` the child must exit 2 with a one-line error, which is printed. Each run gets its own parent
    folder: the content-check cache lives beside ``out``, and a warm cache would skip the tagger."""
    cmd = [sys.executable, "-m", "clinical_transfer", command, "--quiet", "--data-root", str(root),
           "--salt", "benchmark-salt-0123456789", "--out", str(out), *extra]
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if refused:
        assert child.returncode == 2, stderr
        print(f"  refused: {stderr.strip().splitlines()[0][:160]}...")
    elif child.returncode:
        raise SystemExit(stderr)
    return usage.ru_maxrss / 1024  # kB -> MB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--metadata-rows", type=int, default=1_500_000,
                    help="participants in a large metadata file (0: skip)")
    ap.add_argument("--no-extract", dest="extract", action="store_false", help="skip the extract measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {}
        roots = {}
        for name, seconds in (("10 s", 10.0), ("9.5 min", 570.0), (f"{args.hours:g} h", args.hours * 3600)):
            root = roots[name] = write_demo_corpus(Path(tmp) / name.replace(" ", ""),
                                                   DemoConfig(n_participants=4, duration_s=1.0), progress=False)
            target = next(root.rglob("counting-normal.wav"))
            _long_wav(target, seconds)
            peaks[name] = _peak_rss_mb(root, Path(tmp) / f"runs_{name.replace(' ', '')}" / "out")
            print(f"inventory with one {name} recording ({target.stat().st_size / 1e6:.0f} MB): peak RSS {peaks[name]:.0f} MB",
                  flush=True)
        short, under, long_ = peaks.values()
        print(f"ratio {long_ / short:.2f}x (goal <= 1.5x); a recording just under the maximum (decoded, measured and "
              f"tagged in blocks): {under / short:.2f}x")
        if args.extract:  # scoring: the long recording is decoded and encoded whole (bounded by the maximum)
            ext = {n: _peak_rss_mb(roots[n], Path(tmp) / f"ext_{n.replace(' ', '')}" / "out", "--device", "cpu",
                                   command="extract") for n in ("10 s", "9.5 min")}
            print(f"extract (embedded encoder + SAE, CPU) with one 10 s / 9.5 min recording: peak RSS "
                  f"{ext['10 s']:.0f} / {ext['9.5 min']:.0f} MB ({ext['9.5 min'] / ext['10 s']:.2f}x); longer ones are "
                  "too_long and never decoded", flush=True)
        if args.metadata_rows:  # a large combined_data.csv beside 4 people's audio
            root = write_demo_corpus(Path(tmp) / "meta", DemoConfig(n_participants=4, duration_s=1.0), progress=False)
            meta = pd.read_csv(root / "combined_data.csv", dtype=str, keep_default_na=False)
            big = meta.sample(args.metadata_rows, replace=True, random_state=0).reset_index(drop=True)
            big["id"] = [f"X{i:027d}" for i in range(len(big))]
            pd.concat([meta, big]).to_csv(root / "combined_data.csv", index=False)
            size = (root / "combined_data.csv").stat().st_size / 1e6
            n = len(big) + len(meta)
            print(f"a {size:.0f} MB combined_data.csv: {n:,} participants, {len(meta)} with audio", flush=True)
            peak = _peak_rss_mb(root, Path(tmp) / "out_meta", "--only-with-audio")
            print(f"  inventory --only-with-audio: peak RSS {peak:.0f} MB", flush=True)
            refused = args.metadata_rows > MAX_LISTED_WITHOUT_AUDIO
            peak = _peak_rss_mb(root, Path(tmp) / "out_meta_all", refused=refused)
            print(f"  inventory without it ({'refused' if refused else f'{9 * n:,} rows listed'}): peak RSS "
                  f"{peak:.0f} MB")


if __name__ == "__main__":
    main()
