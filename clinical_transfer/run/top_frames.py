"""Where a reported feature fires: its top-activating frames, as pictures only for synthetic audio.

Why: a packet's statistics say *that* a feature moves with a label; a reader who wants to know *what it
hears* looks at the moments it fires hardest. For each feature that has an evidence packet, the
recordings of its family with the highest aggregated activation are encoded again (a handful per
feature, seconds of work) and the frame where the feature peaks is located.

Where that goes depends on whose audio it is:

- the synthetic demo corpus (no person's voice): a log-mel thumbnail of a short window around each peak,
  one PNG per family (``evidence/<label>/<group>/top_frames.png``), marked as synthetic in its metadata;
- a real corpus: nothing of the audio, in the output or anywhere. Only the pseudonymous recording ids
  and time offsets, written to the *private* folder (``<out>_private/evidence_top_frames.csv``, beside
  the per-recording scores) so a researcher with access to the corpus can listen there.

``clinical-transfer audit`` fails a run folder that carries a top-frames picture without being a demo
run (see :func:`clinical_transfer.guardrails.audit_run`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clinical_transfer import guardrails
from clinical_transfer.audio import SourceBytes, batched_waveforms

TOP_RECORDINGS = 3
"""Recordings (peaks) per feature."""
THUMBNAIL_FEATURES = 5
"""Features per family drawn in the demo thumbnail (the packet's first ones by adjusted p)."""
WINDOW_S = 0.8
"""Length of the audio window drawn around a peak."""
PRIVATE_FILE = "evidence_top_frames.csv"


def _feature_index(name: str) -> int:
    return int(str(name).rsplit("_", 1)[1])


def top_recordings(chosen: pd.DataFrame, features: pd.DataFrame, meta: pd.DataFrame,
                   n: int = TOP_RECORDINGS) -> pd.DataFrame:
    """Per chosen (segment_group, feature), the ``n`` recordings of that group with the highest aggregated
    activation (ties broken by recording id, so the choice is deterministic). ``features`` is indexed by
    ``recording_id``."""
    rows = []
    for group, part in chosen.groupby("segment_group", sort=True):
        recs = np.sort(meta.loc[meta["segment_group"] == group, "recording_id"].astype(str).unique())
        block = features.reindex(recs)
        for f in part["feature"]:
            v = block[f].to_numpy(dtype=float)
            order = np.lexsort((recs, -np.nan_to_num(v, nan=-np.inf)))
            for rank, i in enumerate(order[:n], start=1):
                if np.isfinite(v[i]) and v[i] > 0:
                    rows.append({"segment_group": group, "feature": f, "rank": rank, "recording_id": recs[i],
                                 "aggregate": float(v[i])})
    return pd.DataFrame(rows, columns=["segment_group", "feature", "rank", "recording_id", "aggregate"])


def locate_peaks(top: pd.DataFrame, sources: dict[str, str], encoder, sae,
                 reader: Callable[[Iterable[str]], Iterator[SourceBytes]], keep_audio: bool,
                 batch: int = 16) -> tuple[pd.DataFrame, dict]:
    """Encode the recordings ``top`` names (``sources``: pseudonymous recording id -> source locator) and
    find each feature's peak frame: adds ``frame``, ``offset_s`` and ``activation``. With ``keep_audio``
    (synthetic audio only) also returns the waveform window around each peak, keyed by row index."""
    wanted = sorted(set(top["recording_id"]))
    by_source = {sources[r]: r for r in wanted if r in sources}
    need = {r: [_feature_index(f) for f in top.loc[top["recording_id"] == r, "feature"]] for r in wanted}
    peaks: dict[tuple[str, int], tuple[int, float]] = {}
    audio: dict[str, np.ndarray] = {}
    for items in batched_waveforms(reader(list(by_source)), encoder.sample_rate, batch):
        states = encoder.hidden_states([y for _, y in items])
        for (src, y), s in zip(items, states):
            rec = by_source[src]
            codes = sae.encode_sparse(s, sort=False)
            idx, val = codes.indices.numpy(), codes.values.to(torch.float32).numpy()
            for f in need[rec]:
                act = np.where(idx == f, val, 0.0).sum(axis=1)
                frame = int(np.argmax(act)) if len(act) else 0
                peaks[(rec, f)] = (frame, float(act[frame]) if len(act) else 0.0)
            if keep_audio:
                audio[rec] = y
    out = top.copy()
    frames = [peaks.get((r, _feature_index(f)), (-1, np.nan)) for r, f in zip(out["recording_id"], out["feature"])]
    out["frame"] = [fr for fr, _ in frames]
    out["activation"] = [round(a, 6) for _, a in frames]
    out["offset_s"] = [round(fr / encoder.frames_per_second, 3) if fr >= 0 else np.nan for fr, _ in frames]
    windows = {}
    if keep_audio:
        half = int(WINDOW_S / 2 * encoder.sample_rate)
        for i, (r, fr) in enumerate(zip(out["recording_id"], out["frame"])):
            if r in audio and fr >= 0:
                c = int(fr / encoder.frames_per_second * encoder.sample_rate)
                y = audio[r]
                windows[i] = y[max(c - half, 0): c + half]
    return out, windows


def thumbnail(rows: pd.DataFrame, windows: dict, sample_rate: int, title: str, path: Path) -> Path:
    """Log-mel pictures of the windows around each feature's peaks: one row per feature, one column per
    recording rank, tiled into one image (one axes draws in a fraction of the time of a subplot grid).
    Synthetic audio only (the caller's duty; the PNG says so in its metadata)."""
    import librosa

    from clinical_transfer.reporting.figures import plt, save_figure

    feats = list(dict.fromkeys(rows["feature"]))
    ncol = int(rows["rank"].max())
    n_mels, width = 48, int(WINDOW_S * sample_rate / 128) + 1
    gap = 3
    mosaic = np.full((len(feats) * (n_mels + gap), ncol * (width + gap)), np.nan)
    for i, f in enumerate(feats):
        for _, r in rows[rows["feature"] == f].iterrows():
            y = windows.get(r.name)
            if y is None or len(y) < 512:
                continue
            mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=512, hop_length=128,
                                                                     n_mels=n_mels), ref=np.max)[:, :width]
            top, left = (len(feats) - 1 - i) * (n_mels + gap), (int(r["rank"]) - 1) * (width + gap)
            mosaic[top:top + n_mels, left:left + mel.shape[1]] = mel
    fig, ax = plt.subplots(figsize=(1.9 * ncol + 1.2, 0.75 * len(feats) + 0.9))
    ax.imshow(mosaic, origin="lower", aspect="auto", cmap="magma", vmin=-70, vmax=0, interpolation="nearest")
    ax.set_yticks([(len(feats) - 1 - i) * (n_mels + gap) + n_mels / 2 for i in range(len(feats))], feats, fontsize=6)
    ax.set_xticks([c * (width + gap) + width / 2 for c in range(ncol)], [f"peak #{c + 1}" for c in range(ncol)],
                  fontsize=6)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=7)
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.14, top=0.88)
    return save_figure(fig, path, source=guardrails.SYNTHETIC_SOURCE)


def write_top_frames(evidence: dict[str, pd.DataFrame], features: pd.DataFrame, meta: pd.DataFrame,
                     recordings: pd.DataFrame, salt: str, encoder, sae,
                     reader: Callable[[Iterable[str]], Iterator[SourceBytes]], out: Path, private: Path,
                     synthetic: bool) -> dict[str, int]:
    """Top-activating frames of every feature with an evidence packet (``evidence``: per label, the packets
    written). Synthetic corpus: thumbnails into ``out/evidence``; real corpus: ids + offsets into
    ``private`` only. Returns counts for the report."""
    features = features.set_index("recording_id")
    ok = recordings[recordings["status"] == "ok"]
    sources = dict(zip(guardrails.pseudonymise(ok["recording_id"], salt, "r"), ok["source"]))
    tables = []
    for label, chosen in evidence.items():
        if chosen.empty:
            continue
        top = top_recordings(chosen, features, meta)
        if not top.empty:
            tables.append(top.assign(label=label))
    if not tables:
        return {"features": 0, "thumbnails": 0}
    top = pd.concat(tables, ignore_index=True)
    located, windows = locate_peaks(top, sources, encoder, sae, reader, keep_audio=synthetic)
    n_thumbs = 0
    if synthetic:
        for (label, group), part in located.groupby(["label", "segment_group"], sort=True):
            firsts = list(dict.fromkeys(part["feature"]))[:THUMBNAIL_FEATURES]
            rows = part[part["feature"].isin(firsts)]
            thumbnail(rows, windows, encoder.sample_rate,
                      f"{label} / {group}: top-activating frames (synthetic demo audio; no person's voice)",
                      out / "evidence" / label / group / "top_frames.png")
            n_thumbs += 1
    else:
        cols = ["label", "segment_group", "feature", "rank", "recording_id", "offset_s", "activation"]
        guardrails.write_table(located[cols], private / PRIVATE_FILE.removesuffix(".csv"), formats=("csv",))
    return {"features": int(located[["label", "segment_group", "feature"]].drop_duplicates().shape[0]),
            "thumbnails": n_thumbs}
