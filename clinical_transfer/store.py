"""Per-recording SAE scores: a content-addressed cache and a sparse, deterministic score store.

Cache: one file per (audio SHA-256, encoder id, layer, SAE hash, aggregation version) under
``cache/<key[:2]>/<key>.npz``, written atomically (temporary file + rename). A re-run, or a run that was
killed midway, finds finished recordings there and does no encoder work for them.

Store (a folder): ``index.parquet`` (pseudonymous recording and participant ids, segment group,
recording type, frames) and one CSR structure over (recordings x SAE features) shared by the three
aggregates — ``indptr.npy``, ``indices.npy``, ``mean.npy``, ``frac_active.npy``, ``max.npy`` — plus
``manifest.json``. Plain ``.npy`` files (no zip timestamps) keep a store byte-identical across runs.
Scores are per-recording activations: they stay private to the run and are never exported by reporting.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from clinical_transfer import guardrails
from clinical_transfer.errors import ClinicalTransferError, named, read_json, reading
from clinical_transfer.files import atomic_write
from clinical_transfer.hashing import sha256_file, sha256_text

AGGREGATION = "mean,frac_active,max/v1"
FRAMES_TAG = "+frames"
AGGREGATES = ("mean", "frac_active", "max")


def cache_key(audio_sha256: str, encoder_id: str, layer: int, sae_hash: str, aggregation: str = AGGREGATION) -> str:
    return sha256_text(f"{audio_sha256}|{encoder_id}|{layer}|{sae_hash}|{aggregation}")


@dataclass
class RecordingScores:
    """Sparse aggregates of one recording: active feature ids and their mean / frac_active / max."""

    features: np.ndarray  # int32, sorted
    mean: np.ndarray
    frac_active: np.ndarray
    max: np.ndarray
    n_frames: int
    frame_indices: np.ndarray | None = None
    """Optional frame-level TopK codes (n_frames, k): feature ids (uint16 when they fit) ..."""
    frame_values: np.ndarray | None = None
    """... and their activations (float16)."""


def compact_frames(indices: np.ndarray, values: np.ndarray, d_sae: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level codes as stored: uint16 feature ids (int32 past 65,536 features), float16 values."""
    return indices.astype(np.uint16 if d_sae <= 65536 else np.int32), values.astype(np.float16)


def aggregate(indices: np.ndarray, values: np.ndarray, d_sae: int, keep_frames: bool = False) -> RecordingScores:
    """Aggregate TopK codes (T, k) of one recording over its frames (zeros count as inactive).

    ``keep_frames`` also keeps the frame-level codes in compact dtypes (uint16 ids, float16 values).
    """
    T = int(indices.shape[0])
    idx = indices.reshape(-1).astype(np.int64)
    val = values.reshape(-1).astype(np.float64)
    keep = val > 0
    idx, val = idx[keep], val[keep]
    total = np.bincount(idx, weights=val, minlength=d_sae)
    count = np.bincount(idx, minlength=d_sae)
    peak = np.zeros(d_sae)
    np.maximum.at(peak, idx, val)
    feats = np.flatnonzero(count).astype(np.int32)
    n = max(T, 1)
    frames = compact_frames(indices, values, d_sae) if keep_frames else (None, None)
    return RecordingScores(feats, (total[feats] / n).astype(np.float32), (count[feats] / n).astype(np.float32),
                           peak[feats].astype(np.float32), T, *frames)


def _checksum(s: RecordingScores) -> str:
    """SHA-256 over an entry's arrays (the zip CRC catches most damage; this catches the rest)."""
    h = hashlib.sha256()
    for a in (s.features, s.mean, s.frac_active, s.max, np.int64(s.n_frames), s.frame_indices, s.frame_values):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class ScoreCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.corrupt = 0
        """Entries found corrupt (and removed) by :meth:`get` in this process."""

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> RecordingScores | None:
        """The entry, or None when absent — or corrupt (0 bytes, truncated, a bit flipped, a checksum that
        does not match): a corrupt entry is removed so that the caller recomputes it, never trusted."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                arrays = {n: z[n] for n in z.files}
            frames = (arrays["frame_indices"], arrays["frame_values"]) if "frame_indices" in arrays else (None, None)
            scores = RecordingScores(arrays["features"], arrays["mean"], arrays["frac_active"], arrays["max"],
                                     int(arrays["n_frames"]), *frames)
            if "checksum" in arrays and str(arrays["checksum"]) != _checksum(scores):
                raise ValueError("checksum mismatch")
            return scores
        except Exception:  # noqa: BLE001 - any unreadable entry is recomputed, whatever the library raised
            self.corrupt += 1
            p.unlink(missing_ok=True)
            return None

    def put(self, key: str, s: RecordingScores) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        extra = {"frame_indices": s.frame_indices, "frame_values": s.frame_values} if s.frame_indices is not None else {}
        np.savez(buf, features=s.features, mean=s.mean, frac_active=s.frac_active, max=s.max, n_frames=s.n_frames,
                 checksum=_checksum(s), **extra)
        atomic_write(p, buf.getvalue())  # a killed run never leaves a half-written entry


def write_store(folder: str | Path, index: pd.DataFrame, scores: list[RecordingScores], d_sae: int,
                manifest: dict) -> Path:
    """Write rows in the order given (callers sort by pseudonymous recording id)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    indptr = np.zeros(len(scores) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(s.features) for s in scores])
    arrays = {"indptr": indptr,
              "indices": np.concatenate([s.features for s in scores]) if scores else np.zeros(0, np.int32)}
    for name in AGGREGATES:
        arrays[name] = np.concatenate([getattr(s, name) for s in scores]) if scores else np.zeros(0, np.float32)
    if scores and all(s.frame_indices is not None for s in scores):  # optional frame-level codes
        arrays["frames_indptr"] = np.concatenate([[0], np.cumsum([len(s.frame_indices) for s in scores])]).astype(np.int64)
        arrays["frames_indices"] = np.concatenate([s.frame_indices for s in scores])
        arrays["frames_values"] = np.concatenate([s.frame_values for s in scores])
    for stale in folder.glob("frames_*.npy"):  # an earlier store's frame codes are never read as this one's
        if stale.stem not in arrays:
            stale.unlink()
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    guardrails.write_table(index.reset_index(drop=True), folder / "index", formats=("parquet",))
    files = {f"{n}.npy": sha256_file(folder / f"{n}.npy") for n in arrays} | {"index.parquet": sha256_file(folder / "index.parquet")}
    guardrails.write_json({**manifest, "d_sae": d_sae, "n_recordings": len(scores), "aggregation": AGGREGATION,
                           "files_sha256": files}, folder / "manifest.json")
    return folder


class ScoreStore:
    """Reader: the index and each aggregate as a scipy CSR matrix (recordings x features)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "manifest.json").is_file():
            raise ClinicalTransferError(f"{self.folder} is not a score store (no manifest.json)",
                                        "create one with: clinical-transfer extract ... --out DIR")
        with self._reading():
            self.manifest = read_json(self.folder / "manifest.json")
            self.index = pd.read_parquet(self.folder / "index.parquet")
            self.d_sae = int(self.manifest["d_sae"])

    def _reading(self):
        return reading(f"the score store {self.folder}",
                       "write it again with clinical-transfer extract ... --out DIR (finished recordings come from "
                       "the score cache)")

    def _arrays(self, *names: str) -> dict[str, np.ndarray]:
        """The named arrays, checked against each other and the index (a truncated or swapped file is an
        error here, not a wrong matrix later)."""
        with self._reading():
            arrays = {n: named(self.folder / f"{n}.npy", np.load) for n in ("indptr", "indices", *names)}
            ip = arrays["indptr"]
            if len(ip) != len(self.index) + 1 or (len(ip) and ip[-1] != len(arrays["indices"])):
                raise ValueError(f"indptr.npy has {len(ip)} offsets ending at {ip[-1] if len(ip) else '-'} for "
                                 f"{len(self.index)} recordings and {len(arrays['indices'])} codes")
            for n in names:
                if len(arrays[n]) != len(arrays["indices"]):
                    raise ValueError(f"{n}.npy has {len(arrays[n])} values for {len(arrays['indices'])} codes")
        return arrays

    def matrix(self, aggregate: str = "mean") -> sparse.csr_matrix:
        if aggregate not in AGGREGATES:
            raise ClinicalTransferError(f"unknown aggregate {aggregate!r}", f"use one of: {', '.join(AGGREGATES)}")
        a = self._arrays(aggregate)
        return sparse.csr_matrix((a[aggregate], a["indices"], a["indptr"]), shape=(len(self.index), self.d_sae))

    def frame_codes(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame-level TopK codes (ids, values) of one recording, when the store was written with them."""
        if not (self.folder / "frames_indptr.npy").is_file():
            raise ClinicalTransferError(f"{self.folder} has no frame-level codes", "re-run extract with --frame-codes")
        with self._reading():
            ip = named(self.folder / "frames_indptr.npy", np.load)
            arrays = [named(self.folder / f"frames_{n}.npy", partial(np.load, mmap_mode="r")) for n in ("indices", "values")]
        sl = slice(ip[row], ip[row + 1])  # outside: a wrong row is the caller's error, not a damaged store
        return arrays[0][sl], arrays[1][sl]

    def all_scores(self) -> list[RecordingScores]:
        """Every row's scores, reading each array file once (merging shards must not re-read per row)."""
        load = self._arrays(*AGGREGATES)
        has_frames = (self.folder / "frames_indptr.npy").is_file()
        if has_frames:
            with self._reading():
                fp, fi, fv = (named(self.folder / f"frames_{n}.npy", np.load) for n in ("indptr", "indices", "values"))
        out = []
        for row in range(len(self.index)):
            sl = slice(load["indptr"][row], load["indptr"][row + 1])
            frames = (fi[fp[row]:fp[row + 1]], fv[fp[row]:fp[row + 1]]) if has_frames else (None, None)
            out.append(RecordingScores(load["indices"][sl], load["mean"][sl], load["frac_active"][sl], load["max"][sl],
                                       int(self.index["n_frames"].iloc[row]), *frames))
        return out


def merge_stores(shards: list[str | Path], out: str | Path) -> Path:
    """Join shard stores into one store identical to an unsharded run; refuse overlaps and gaps."""
    stores = [ScoreStore(s) for s in shards]
    if not stores:
        raise ClinicalTransferError("no shard folders given", "pass every shard folder of the run")
    specs = [tuple(s.manifest.get("shard", (0, 1))) for s in stores]
    n = {sp[1] for sp in specs}
    if len(n) != 1:
        raise ClinicalTransferError(f"shards come from different splits (N = {sorted(n)})", "merge shards of one run")
    N = n.pop()
    seen = [sp[0] for sp in specs]
    dup = sorted({i for i in seen if seen.count(i) > 1})
    if dup:
        raise ClinicalTransferError(f"shard(s) {', '.join(f'{i}/{N}' for i in dup)} given more than once (overlap)",
                                    "pass each shard folder once")
    missing = sorted(set(range(N)) - set(seen))
    if missing:
        raise ClinicalTransferError(f"shard(s) {', '.join(f'{i}/{N}' for i in missing)} missing",
                                    "run the missing shards with --shard i/N, then merge all of them")
    keys = ("encoder_id", "layer", "sae_sha256", "aggregation", "d_sae", "salt_digest", "frame_codes")
    for s in stores[1:]:
        for k in keys:
            if s.manifest.get(k) != stores[0].manifest.get(k):
                raise ClinicalTransferError(f"shards disagree on {k}", "merge shards made with the same encoder, SAE and salt")
    index = pd.concat([s.index for s in stores], ignore_index=True)
    scores = [sc for s in stores for sc in s.all_scores()]
    order = np.argsort(index["recording_id"].to_numpy(), kind="stable")
    manifest = {k: v for k, v in stores[0].manifest.items() if k not in ("files_sha256", "n_recordings", "shard",
                                                                        guardrails.BANNER_KEY, "run_summary")}
    manifest["shard"] = (0, 1)
    manifest["run_summary"] = _sum_summaries([s.manifest.get("run_summary", {}) for s in stores])
    return write_store(out, index.iloc[order], [scores[i] for i in order], int(stores[0].manifest["d_sae"]), manifest)


def _sum_summaries(parts: list[dict]) -> dict:
    out: dict = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, dict):
                out[k] = _sum_summaries([out.get(k, {}), v])
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
    return out
