"""Turn found-or-missing audio into inventory rows: status, reason, measures, hash and content tag.

Why shared: every adapter must account for every expected recording the same way — ``ok``, ``missing``,
``unreadable``, ``silent``, ``too_short`` or ``too_long`` with a reason — so that nothing is silently dropped and the
reports can count exclusions by reason whatever the corpus.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from clinical_transfer.audio import (
    AudioCheckConfig,
    check_decoded,
    declared_duration_s,
    to_mono,
    too_long,
    wav_declared_duration_s,
)
from clinical_transfer.files import atomic_write
from clinical_transfer.hashing import sha256_bytes, sha256_file
from dataset_adapters.segments import segment_of
from dataset_adapters.tagger import TaggerConfig, features, tag_from_features

_MEASURES = ("sample_rate_hz", "n_channels", "duration_s", "peak_dbfs", "rms_dbfs", "silence_fraction",
             "clipped_fraction")


UNVALIDATED = "not validated (check_audio=False)"


def unvalidated(recording_type: str) -> dict:
    """Inventory fields of a recording whose file exists but was not read (``check_audio=False``)."""
    return {**inspect(None, recording_type), "status": "ok", "status_reason": UNVALIDATED}


def inspect(
    data: bytes | None,
    recording_type: str,
    audio_cfg: AudioCheckConfig = AudioCheckConfig(),
    tag: bool = True,
    tagger_cfg: TaggerConfig = TaggerConfig(),
) -> dict:
    """Inventory fields of one expected recording (``data`` is None when the file is absent)."""
    group = segment_of(recording_type).segment_group
    row: dict = {k: np.nan for k in _MEASURES}
    row.update(status="missing", status_reason="file not found", audio_sha256=None, tag=None, tag_agreement=pd.NA)
    if data is None:
        return row
    row["audio_sha256"] = sha256_bytes(data)
    result, decoded = check_decoded(data, audio_cfg)
    row.update(status=result.status, status_reason=result.reason)
    if result.measures is not None:
        row.update({k: v for k, v in asdict(result.measures).items() if k in _MEASURES})
    elif result.status == "too_long":  # as for a file or an archive member judged by its first bytes
        row["duration_s"] = result.declared_s
    if tag and result.status == "ok":
        x, sr = decoded  # decoded once, by the check
        decoded = None
        y = to_mono(x)
        del x  # a multi-channel recording's samples are not needed beside their mix
        row["tag"] = tag_from_features(features(y, sr, tagger_cfg), tagger_cfg)
        row["tag_agreement"] = row["tag"] == group
    return row


def inspect_too_long(path: str | Path, recording_type: str, audio_cfg: AudioCheckConfig = AudioCheckConfig()) -> dict | None:
    """The inventory row of a file whose header declares more than ``max_duration_s``, without reading the
    file into memory (streamed hash, header probe); None when it is not too long (inspect it as usual).
    Why: one 1-hour file must not raise the inventory's peak memory by its decoded size."""
    declared = declared_duration_s(path)
    if too_long(declared, audio_cfg) is None:
        return None
    return too_long_row(recording_type, declared, sha256_file(path), audio_cfg)


def inspect_file(path: str | Path, recording_type: str, audio_cfg: AudioCheckConfig = AudioCheckConfig(),
                 tag: bool = True, tagger_cfg: TaggerConfig = TaggerConfig()) -> dict:
    """:func:`inspect` of a file on disk, which is read only when its header is not past
    ``max_duration_s`` (else :func:`inspect_too_long`'s row: hashed by streaming, never held whole)."""
    row = inspect_too_long(path, recording_type, audio_cfg)
    return row if row is not None else inspect(Path(path).read_bytes(), recording_type, audio_cfg, tag, tagger_cfg)


def inspect_listed(path: Path | None, recording_type: str, audio_cfg: AudioCheckConfig = AudioCheckConfig(),
                   tag: bool = True, check_audio: bool = True) -> dict:
    """The inventory fields of a recording a corpus lists at ``path``: ``missing`` when there is no file
    (None or not on disk), unread with ``check_audio=False`` (:func:`unvalidated`), else :func:`inspect_file`
    (read only when its header is within the maximum duration). The one rule of the file-per-recording
    adapters (COUGHVID, UK COVID-19, manifest)."""
    if path is None or not Path(path).is_file():
        return inspect(None, recording_type)
    if not check_audio:
        return unvalidated(recording_type)
    return inspect_file(path, recording_type, audio_cfg, tag)


def too_long_row(recording_type: str, declared_s: float, sha256: str,
                 audio_cfg: AudioCheckConfig = AudioCheckConfig()) -> dict:
    """The inventory row of a recording whose header declares ``declared_s`` > ``max_duration_s``."""
    row = inspect(None, recording_type)
    row.update(status="too_long", status_reason=too_long(declared_s, audio_cfg), audio_sha256=sha256,
               duration_s=declared_s)
    return row


def screen_too_long(audio_cfg: AudioCheckConfig):
    """A ``screen`` for :func:`~dataset_adapters.archive.iter_members`: the declared duration of a WAV
    member past ``max_duration_s`` (from its first bytes), else None (read it whole as usual)."""
    def screen(head: bytes, size: int) -> float | None:
        declared = wav_declared_duration_s(head, size)
        return declared if too_long(declared, audio_cfg) else None
    return screen


def finish_table(table: pd.DataFrame, sort_by: list[str] | str = "recording_id") -> pd.DataFrame:
    """The Recording table's common tail: every adapter's columns typed alike (nullable integers, a
    nullable boolean agreement), :data:`~dataset_adapters.base.RECORDING_COLUMNS` first, rows sorted."""
    from dataset_adapters.base import RECORDING_COLUMNS

    table = table.copy()
    for col in ("wave", "quality"):
        if col not in table.columns:
            table[col] = pd.NA
    for col in ("sample_rate_hz", "n_channels", "quality"):
        table[col] = pd.to_numeric(table[col], errors="coerce").round().astype("Int64")
    table["tag_agreement"] = table["tag_agreement"].astype("boolean")
    other = [c for c in table.columns if c not in RECORDING_COLUMNS]
    table = table[list(RECORDING_COLUMNS) + other]
    return table.sort_values(sort_by, kind="stable").reset_index(drop=True)


def status_counts(recordings: pd.DataFrame) -> pd.DataFrame:
    """Counts of recordings by (segment group, status, reason): the inclusion/exclusion table."""
    return (
        recordings.fillna({"status_reason": ""})
        .groupby(["segment_group", "status", "status_reason"], dropna=False)
        .size()
        .rename("n_recordings")
        .reset_index()
    )


def tag_agreement_summary(recordings: pd.DataFrame) -> pd.DataFrame:
    """Share of ``ok`` recordings whose content tag agrees with the declared segment group."""
    ok = recordings[recordings["status"] == "ok"].dropna(subset=["tag"])
    if ok.empty:
        return pd.DataFrame(columns=["segment_group", "n", "agreement"])
    g = ok.groupby("segment_group")["tag_agreement"]
    return pd.DataFrame({"n": g.size(), "agreement": g.apply(lambda s: float(s.astype(bool).mean()))}).reset_index()


def default_workers() -> int:
    """Processes for the inventory: ``$CLINICAL_TRANSFER_WORKERS``, else every core (at most 16)."""
    env = os.environ.get("CLINICAL_TRANSFER_WORKERS", "")
    return max(1, int(env)) if env.isdigit() else max(1, min(os.cpu_count() or 1, 16))


def _inspect_job(data: bytes, audio_cfg: AudioCheckConfig, tag: bool) -> dict:
    row = inspect(data, "", audio_cfg, tag)  # the group only sets tag_agreement, which the caller adds
    return {k: v for k, v in row.items() if k != "tag_agreement"}


_LIMITS = None


def _pool(workers: int) -> ProcessPoolExecutor:
    """Workers forked from a fork server that has imported and warmed the checks once.

    Why a fork server: it is a fresh small process, so workers neither inherit the caller's threads,
    GPU context or gigabytes of model memory (forking such a process was measured 3.6x slower than
    serial on a 16-core GPU machine) nor pay the ~2.5 s librosa import and kernel compilation each.
    Where there is no fork server (not Linux/macOS), spawn.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["dataset_adapters._inspect_worker"])
    else:
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread)


def _one_thread() -> None:
    """Worker start: one BLAS/OpenMP thread per process (n processes x n threads oversubscribes the
    cores: measured 2x slower than serial on 2 cores)."""
    global _LIMITS
    from threadpoolctl import threadpool_limits

    _LIMITS = threadpool_limits(1)


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


class Inspector:
    """:func:`inspect` over many recordings: a process pool (all cores) and a cache keyed by audio hash.

    Why: the content check and the tagger cost ~50-65 ms per recording, ~25 min serially for
    Coswara's ~25,000 recordings. Each recording is independent, so a pool of processes takes them in
    parallel (in flight at most ``4 x workers``, so a streamed archive never sits in memory whole), and
    the result — a pure function of the bytes and the check settings — is cached by the audio's SHA-256,
    so a second inventory of the same corpus re-reads the bytes but checks nothing. Small corpora
    (< 64 recordings) never start a pool. The table is the same whatever ``workers`` is (tested).

    Use: ``submit(key, recording_type, data)`` yields the rows finished so far; ``finish()`` the rest.
    """

    START_POOL_AT = 64

    def __init__(self, audio_cfg: AudioCheckConfig, tag: bool = True, workers: int | None = None,
                 cache_dir: str | Path | None = None):
        self._job = (audio_cfg, tag)  # _inspect_job's settings, in this process or a worker
        self.workers = default_workers() if workers is None else max(1, workers)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        settings = json.dumps({"audio": asdict(audio_cfg), "tag": tag, "tagger": asdict(TaggerConfig()), "v": 1},
                              sort_keys=True)
        self._salt = sha256_bytes(settings.encode())
        self._pool = None
        self._waiting: list = []  # (key, group, cache_path, data) before the pool starts
        self._flight: deque = deque()  # (key, group, cache_path, data, future): data kept for a serial fallback

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = sha256_bytes(f"{self._salt}:{digest}".encode())
        return self.cache_dir / key[:2] / f"{key}.json"

    def _done(self, key, group: str, path: Path | None, info: dict, fresh: bool):
        if fresh and path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, json.dumps({k: _plain(v) for k, v in info.items()}))
            except OSError:
                pass
        row = dict(info)
        row["tag_agreement"] = (row["tag"] == group) if row.get("tag") is not None else pd.NA
        return key, row

    def submit(self, key, recording_type: str, data: bytes):
        group = segment_of(recording_type).segment_group
        path = self._cache_path(sha256_bytes(data))
        if path is not None and path.is_file():
            try:
                yield self._done(key, group, path, json.loads(path.read_text()), False)
                return
            except ValueError:
                pass
        if self.workers == 1:
            yield self._done(key, group, path, _inspect_job(data, *self._job), True)
            return
        if self._pool is None:
            self._waiting.append((key, group, path, data))
            if len(self._waiting) >= self.START_POOL_AT:
                self._pool = _pool(self.workers)
                for k, g, p, d in self._waiting:
                    self._flight.append((k, g, p, d, self._pool.submit(_inspect_job, d, *self._job)))
                self._waiting = []
            yield from self._drain(4 * self.workers)
            return
        self._flight.append((key, group, path, data, self._pool.submit(_inspect_job, data, *self._job)))
        yield from self._drain(4 * self.workers)

    def _drain(self, keep: int):
        while len(self._flight) > keep:
            k, g, p, d, fut = self._flight.popleft()
            try:
                info = fut.result()
            except BrokenProcessPool:
                # a worker died (e.g. a script calling this without `if __name__ == "__main__":`, which
                # the fork server's workers re-import): finish serially, same results, with a warning
                warnings.warn("the inventory's process pool failed; checking the remaining recordings in this "
                              "process (guard a calling script with `if __name__ == '__main__':`)", stacklevel=2)
                self._pool.shutdown(cancel_futures=True)
                self._pool, self.workers = None, 1
                info = _inspect_job(d, *self._job)
                rest, self._flight = list(self._flight), deque()
                yield self._done(k, g, p, info, True)
                for k2, g2, p2, d2, _ in rest:
                    yield self._done(k2, g2, p2, _inspect_job(d2, *self._job), True)
                return
            yield self._done(k, g, p, info, True)

    def finish(self):
        for k, g, p, d in self._waiting:
            yield self._done(k, g, p, _inspect_job(d, *self._job), True)
        self._waiting = []
        yield from self._drain(0)
