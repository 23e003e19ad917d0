"""Frame-level hidden-state dumps: what SAE training and held-out evaluation read.

Layout of a dump folder::

    manifest.json        encoder (name, id, layer + convention, width, frames/s), dtype, splits, shards
    train_00000.npy ...  (tokens, width) arrays, one split per shard
    heldout_00000.npy ...

Why split by participant: held-out FVE must measure tokens of people the SAE never saw, otherwise a
speaker-identity encoder makes the held-out set look easier than it is. Shards are read memory-mapped,
so a dump larger than RAM can still be sampled from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clinical_transfer.audio import SourceBytes, batched_waveforms, decode_plan, read_files
from clinical_transfer.background import Prefetch, Writer
from clinical_transfer.errors import ClinicalTransferError, named, read_json, reading
from clinical_transfer.files import atomic_write
from clinical_transfer.hashing import file_digest, sha256_text, stable_unit

FORMAT = "clinical-transfer-activations/1"


def heldout_participants(participants: pd.Series, fraction: float, seed: int) -> set:
    """A stable, seeded choice of held-out participants (by hash, independent of row order)."""
    ids = sorted(set(participants.astype(str)))
    score = {p: stable_unit(f"{seed}:{p}") for p in ids}
    return {p for p in ids if score[p] < fraction}


PROGRESS = "progress.json"
"""An unfinished dump's journal (gone once manifest.json is written): its settings, the shards written so
far and each encoded recording's token count, so a killed dump resumes instead of starting over."""


def _write_json(path: Path, obj: dict) -> None:
    """The dump's JSON (journal, manifest), whole or not at all: a kill leaves the previous file or none."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _resume_point(out: Path, settings: dict) -> tuple[list[dict], list[tuple[str, str, int]]]:
    """Shards and encoded recordings of an unfinished dump in ``out`` made with ``settings`` (else none);
    a journal of other settings is one clear error."""
    path = out / PROGRESS
    if not path.is_file():
        return [], []
    with reading(f"the unfinished activation dump {out}", "delete the folder (or pass --overwrite) to start over"):
        journal = read_json(path)
        shards, encoded = journal["shards"], [tuple(r) for r in journal["encoded"]]
        for sh in shards:
            if not (out / sh["file"]).is_file() or file_digest(out / sh["file"]) != sh["sha256"]:
                raise ValueError(f"shard {sh['file']} is missing or changed since it was written")
    changed = sorted(k for k in settings.keys() | journal["settings"].keys()
                     if settings.get(k) != journal["settings"].get(k))
    if changed:
        raise ClinicalTransferError(f"{out} holds an unfinished dump made with other settings ({', '.join(changed)})",
                                    "use a new --out, or pass --overwrite to start this one over")
    return shards, encoded


def dump_activations(recordings: pd.DataFrame, encoder, out: str | Path, heldout_fraction: float = 0.2,
                     seed: int = 0, shard_tokens: int = 250_000, dtype: str = "float16", batch: int = 16,
                     progress: bool = True,
                     reader: Callable[[Iterable[str]], Iterator[SourceBytes]] = read_files,
                     heldout: set[str] | None = None) -> Path:
    """Run ``encoder`` over the ``ok`` recordings and write a dump (see module docstring).

    ``reader`` turns source locators into bytes (the corpus adapter's ``read_sources``). ``heldout``: the
    participant ids of the held-out split when the caller has chosen them (else a seeded
    ``heldout_fraction`` of the participants).

    Resumable: after every shard, :data:`PROGRESS` records the shards and each encoded recording's token
    count. A dump killed part way and started again with the same recordings, encoder and settings skips
    the recordings whose tokens are all in written shards, re-encodes the rest (dropping the part of the
    first one already written) and ends with the same files as an uninterrupted dump (tested with GE2E;
    an encoder that pads clips into shared passes, as the transformers ones do, can differ in the last
    float bits of the recording cut by the kill, as any change of batching does). A recording
    that vanished since the inventory is counted in the manifest (``n_vanished``), not lost silently.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ok = recordings[recordings["status"] == "ok"].sort_values("recording_id", kind="stable")
    held = heldout if heldout is not None else heldout_participants(ok["participant_id"], heldout_fraction, seed)
    split_of = {r: ("heldout" if p in held else "train") for r, p in zip(ok["source"], ok["participant_id"].astype(str))}
    settings = {"format": FORMAT, "encoder_id": encoder.id(), "layer": encoder.layer, "dtype": dtype,
                "shard_tokens": shard_tokens, "seed": seed, "heldout_fraction": heldout_fraction,
                "recordings_sha256": sha256_text("\n".join(f"{r}|{a}|{split_of[s]}" for r, a, s in zip(
                    ok["recording_id"].astype(str), ok["audio_sha256"].astype(str), ok["source"])))}
    shards, encoded = _resume_point(out, settings)
    # tokens of each split already in shards, and how many of them each recording still has to skip
    flushed = {sp: sum(sh["n_tokens"] for sh in shards if sh["split"] == sp) for sp in ("train", "heldout")}
    skip: dict[str, int] = {}
    before = dict.fromkeys(flushed, 0)
    for src, sp, n in encoded:
        skip[src] = min(n, max(flushed[sp] - before[sp], 0))
        before[sp] += n
    done = {src for src, sp, n in encoded if skip[src] == n}
    encoded = [r for r in encoded if r[0] in done]  # the rest is encoded again
    buffers: dict[str, list[np.ndarray]] = {"train": [], "heldout": []}
    counts = {"train": 0, "heldout": 0}
    for _, sp, _ in encoded:
        counts[sp] += 1
    vanished: list[str] = []

    device_states = getattr(encoder, "device_hidden_states", None)
    on_gpu = device_states is not None and torch.device(getattr(encoder, "device", "cpu")).type != "cpu"
    writer = Writer() if on_gpu else None  # shard files (GBs at a 12B model's width) written beside the GPU's work
    named_shards = {sp: sum(sh["split"] == sp for sh in shards) for sp in ("train", "heldout")}

    def write_shard(name: str, split: str, take: np.ndarray, encoded_then: list) -> None:
        np.save(out / name, take)
        # remembered (hashing.file_digest): a resumed 45 GB dump re-checks its shards without re-reading them
        shards.append({"file": name, "split": split, "n_tokens": int(len(take)), "sha256": file_digest(out / name)})
        _write_json(out / PROGRESS, {"settings": settings, "shards": shards, "encoded": encoded_then})

    def flush(split: str, force: bool = False) -> None:
        while buffers[split] and (force or sum(len(b) for b in buffers[split]) >= shard_tokens):
            arr = np.concatenate(buffers[split]).astype(dtype)
            take, rest = arr[:shard_tokens], arr[shard_tokens:]
            name = f"{split}_{named_shards[split]:05d}.npy"
            named_shards[split] += 1
            if writer is not None:
                writer.submit(write_shard, name, split, take, list(encoded))
            else:
                write_shard(name, split, take, encoded)
            buffers[split] = [rest] if len(rest) else []
            if force and not len(rest):
                break

    def states_of(ys: list[np.ndarray]) -> list[np.ndarray]:
        """Host arrays per recording. A device encoder's states are cast to the dump's dtype on the device
        and cross in one copy per chunk (not one synchronising copy per clip, in float32); the casts round
        the same way (to nearest even), so the shards equal the host path's (tested)."""
        if device_states is None:
            return [st.numpy() for st in encoder.hidden_states(ys)]
        states = device_states(ys)
        if not states:
            return []
        flat = torch.cat(states).to(getattr(torch, dtype)).cpu().numpy()
        return np.split(flat, np.cumsum([len(st) for st in states])[:-1])

    todo = [src for src in ok["source"] if src not in done]
    bar = tqdm(total=len(ok), initial=len(done), desc=f"activations ({encoder.name})", unit="rec",
               disable=None if progress else True)

    def run(items):
        for (src, _), st in zip(items, states_of([y for _, y in items])):
            split = split_of[src]
            encoded.append((src, split, int(len(st))))
            buffers[split].append(st[skip.get(src, 0):])
            counts[split] += 1
            flush(split)
        bar.update(len(items))

    chunk, threads = decode_plan(batch, on_gpu)
    try:
        for items in Prefetch(batched_waveforms(reader(todo), encoder.sample_rate, chunk, vanished.append, threads)):
            run(items)
        for split in buffers:
            flush(split, force=True)
    finally:
        if writer is not None:
            writer.close()  # the shards queued so far are written (and journalled) even when a chunk failed
    bar.close()
    manifest = {
        "format": FORMAT, "encoder": encoder.name, "encoder_id": encoder.id(), "layer": encoder.layer,
        "layer_convention": encoder.layer_convention, "width": encoder.width,
        "frames_per_second": encoder.frames_per_second, "dtype": dtype, "heldout_fraction": heldout_fraction,
        "seed": seed, "n_recordings": counts, "shards": shards, "n_vanished": len(vanished),
    }
    _write_json(out / "manifest.json", manifest)  # whole or not at all: its presence means the dump is complete
    (out / PROGRESS).unlink(missing_ok=True)
    return out


class TokenArray:
    """Rows of several memory-mapped shards addressed as one (tokens, width) array."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])
        self.shape = (int(self.offsets[-1]), int(arrays[0].shape[1]) if arrays else 0)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self.arrays[s][idx[sel] - self.offsets[s]]
        return torch.from_numpy(out)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """All rows in order, as float32 batches (for evaluation)."""
        for a in self.arrays:
            for lo in range(0, len(a), batch_size):
                yield torch.from_numpy(np.asarray(a[lo : lo + batch_size], dtype=np.float32))


class ActivationDump:
    """Reader of a dump folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise ClinicalTransferError(f"{self.folder} is not an activation dump (no manifest.json)",
                                        "create one with: clinical-transfer activations ... --out DIR")
        with self._reading():
            self.manifest = read_json(path)
            self.shards = [(s["file"], s["split"]) for s in self.manifest["shards"]]

    def _reading(self):
        return reading(f"the activation dump {self.folder}",
                       "write it again with clinical-transfer activations ... --out DIR --overwrite")

    def split(self, name: str) -> TokenArray:
        files = [f for f, split in self.shards if split == name]
        if not files:
            raise ClinicalTransferError(f"the activation dump {self.folder} has no {name!r} tokens",
                                        "dump more recordings, or use a smaller --heldout-fraction")
        with self._reading():
            return TokenArray([named(self.folder / f, partial(np.load, mmap_mode="r")) for f in files])
