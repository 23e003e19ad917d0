"""A label-blind SAE fit to the corpus itself (``--sae fit``), its held-out quality and its seed stability.

Why: the embedded SAE was trained on synthetic demo voices; on real speech it explains about half of the
variance of GE2E states (FVE 0.485 on the shared Coswara sample), so half of what real audio carries is
outside the dictionary the overlay ranks. A dictionary fit to the user's own audio fixes the basis — but
only if it never sees the labels and the people it is tested on:

* participants are split by a stable seeded hash into a *dictionary* split (default 25%: the SAE is
  trained on their encoder states), a *quality* split (15%: held-out FVE, normalised L2, L0 and dead
  fraction on people the SAE never saw) and the rest; the overlay analyses only participants outside the
  dictionary split (``fit_on = "all"`` trains on everyone but the quality split, and the report says so);
* nothing here reads a label column;
* a corpus with a single participant is held out by recording instead (stated in the report);
* ``seeds`` SAEs are trained (seed 0 is the one scored); each feature's stability is its mean matched
  decoder cosine across the others (:mod:`clinical_transfer.sae.stability`);
* everything is cached by content address — encoder id and layer, the dictionary and quality
  recordings' audio hashes, the hyper-parameters, the seed — so a re-run trains nothing, and a killed
  run resumes (activation dump written once, training from its checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clinical_transfer.activations import ActivationDump, dump_activations
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.hashing import sha256_text, stable_unit
from clinical_transfer.run.config import SAEFitConfig
from clinical_transfer.sae import default as default_sae
from clinical_transfer.sae.evaluate import evaluate
from clinical_transfer.sae.formats import load_sae
from clinical_transfer.sae.stability import STABLE, decoder_stability
from clinical_transfer.sae.train import TrainConfig, train_topk

FIT_ON = ("split", "all")


@dataclass
class FittedSAE:
    sae: object
    name: str
    key: str
    dictionary: set[str]
    """Participant ids whose states trained the SAE (left out of the overlay unless fit_on = all)."""
    report: dict = field(default_factory=dict)
    """Split sizes, held-out quality, the embedded SAE's quality on the same states, stability summary."""
    stability: np.ndarray | None = None


def split_participants(participants: pd.Series, cfg: SAEFitConfig, seed: int) -> dict[str, str]:
    """Participant -> 'dictionary' | 'quality' | 'analysis' by a stable seeded hash (row order and labels
    play no part)."""
    roles = {}
    for p in sorted(set(participants.astype(str))):
        u = stable_unit(f"{seed}:sae-split:{p}")
        if u < cfg.quality_fraction:
            roles[p] = "quality"
        elif cfg.fit_on == "all" or u < cfg.quality_fraction + cfg.fraction:
            roles[p] = "dictionary"
        else:
            roles[p] = "analysis"
    return roles


def fit_corpus_sae(recordings: pd.DataFrame, encoder, reader, work: Path, cfg: SAEFitConfig, seed: int = 0,
                   progress: bool = True) -> FittedSAE:
    """Fit (or load from ``work``) the corpus SAE of ``recordings``' ok rows; see the module docstring."""
    if cfg.fit_on not in FIT_ON:
        raise ClinicalTransferError(f"sae_fit_on is {cfg.fit_on!r}", f"use one of: {', '.join(FIT_ON)}")
    ok = recordings[recordings["status"] == "ok"].copy()
    if ok.empty:
        raise ClinicalTransferError("no usable recording to fit an SAE on", "check the inventory's exclusions")
    ok["participant_id"] = ok["participant_id"].astype(str)
    by_recording = ok["participant_id"].nunique() < 2
    if by_recording:  # one person: hold out recordings, not people (the report says so)
        ok["_unit"] = ok["recording_id"].astype(str)
    else:
        ok["_unit"] = ok["participant_id"]
    if by_recording:  # a quarter of the recordings (at least one) held out, the rest train the SAE
        order = sorted(set(ok["_unit"]), key=lambda u: stable_unit(f"{seed}:sae-split:{u}"))
        n_q = max(1, round(0.25 * len(order)))
        roles = {u: ("quality" if i < n_q else "dictionary") for i, u in enumerate(order)}
    else:
        roles = split_participants(ok["_unit"], cfg, seed)
    ok["_role"] = ok["_unit"].map(roles)
    used = ok[ok["_role"].isin(["dictionary", "quality"])]
    n_dict = int((used["_role"] == "dictionary").sum())
    if n_dict == 0 or not (used["_role"] == "quality").any():
        raise ClinicalTransferError(
            f"the SAE dictionary split has {ok[ok['_role'] == 'dictionary']['_unit'].nunique()} and the quality "
            f"split {ok[ok['_role'] == 'quality']['_unit'].nunique()} participant(s)",
            "use a corpus with more participants, --sae-fit-on all, or pass --sae PATH")
    hyper = {k: v for k, v in asdict(cfg).items() if k != "seeds"}
    key = sha256_text(json.dumps({
        "encoder_id": encoder.id(), "layer": encoder.layer, "seed": seed, "hyper": hyper,
        "by_recording": by_recording,
        "recordings": sorted(zip(used["_role"], used["audio_sha256"].astype(str))),
    }, sort_keys=True))
    folder = Path(work) / key[:16]
    acts = folder / "activations"
    if not (acts / "manifest.json").is_file():
        dump = used.assign(participant_id=used["_unit"])
        dump_activations(dump, encoder, acts, seed=seed, progress=progress, reader=reader,
                         heldout=set(dump.loc[dump["_role"] == "quality", "participant_id"]))
    data = ActivationDump(acts)
    saes = []
    for s in range(max(cfg.seeds, 1)):
        out = folder / f"seed_{s}"
        if (out / "sae.pt").is_file():
            saes.append(load_sae(out / "sae.pt"))
            continue
        tc = TrainConfig(expansion=cfg.expansion, k=cfg.k, steps=cfg.steps, batch_size=cfg.batch_size,
                         seed=seed * 1000 + s, val_every=max(cfg.steps, 1), checkpoint_every=max(cfg.steps // 4, 1),
                         log_every=max(cfg.steps // 10, 1), dead_after_tokens=2_000_000)
        saes.append(train_topk(data.split("train"), data.split("heldout"), out, tc, progress=progress))
        (out / "checkpoint.pt").unlink(missing_ok=True)
    summary, _ = evaluate(saes[0], data.split("heldout").batches(4096))
    report = {
        "key": key, "fit_on": cfg.fit_on, "hyper_parameters": hyper, "seeds": len(saes),
        "heldout_unit": "recording" if by_recording else "participant",
        "n_dictionary": int(ok.loc[ok["_role"] == "dictionary", "_unit"].nunique()),
        "n_quality": int(ok.loc[ok["_role"] == "quality", "_unit"].nunique()),
        "n_analysed": int(ok.loc[ok["_role"] != "dictionary", "participant_id"].nunique())
        if cfg.fit_on == "split" and not by_recording else int(ok["participant_id"].nunique()),
        "train_tokens": int(len(data.split("train"))), "heldout_tokens": summary.n_tokens,
        "heldout": {k: getattr(summary, k) for k in ("fve", "normalized_l2", "l0", "dead_fraction")},
    }
    if default_sae.reads(encoder.name, encoder.layer):  # how the embedded SAE does on the same held-out states
        emb, _ = evaluate(default_sae.load_default_sae(), data.split("heldout").batches(4096))
        report["embedded_default_heldout"] = {k: getattr(emb, k) for k in ("fve", "normalized_l2", "l0", "dead_fraction")}
    stability = decoder_stability(saes[0], saes[1:]) if len(saes) > 1 else None
    if stability is not None:
        report["stability"] = {"stable_threshold": STABLE, "n_features": int(len(stability)),
                               "n_stable": int((stability >= STABLE).sum()),
                               "median": float(np.median(stability))}
    (folder / "fit_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    dictionary = set() if by_recording or cfg.fit_on == "all" else set(
        ok.loc[ok["_role"] == "dictionary", "participant_id"])
    name = f"corpus-fit SAE {key[:12]} (seed 0 of {len(saes)}; {cfg.expansion}x, k={cfg.k}; fit on {cfg.fit_on})"
    return FittedSAE(saes[0], name, key, dictionary, report, stability)
