"""The recipe of the embedded default SAE (``clinical-transfer build-default-sae``).

The SAE is a *demo artifact* (see :mod:`clinical_transfer.sae.default`): trained by
:mod:`clinical_transfer.sae.train` on GE2E layer-3 states of the synthetic demo corpus. The recipe is
deterministic for its seed; the committed copy lives in ``clinical_transfer/data/default_sae``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from clinical_transfer.activations import ActivationDump, dump_activations
from clinical_transfer.encoders import get_encoder
from clinical_transfer.sae.default import DEFAULT_DIR, ENCODER, LAYER, STABILITY_FILE
from clinical_transfer.sae.evaluate import evaluate, write_eval
from clinical_transfer.sae.train import TrainConfig, train_topk
from dataset_adapters import get_adapter
from dataset_adapters.demo import DemoConfig, write_demo_corpus

DEMO = DemoConfig(n_participants=160, seed=0, duration_s=2.5)
HELDOUT_FRACTION = 0.2
TRAIN = TrainConfig(expansion=1, k=4, batch_size=4096, steps=3000, lr=2e-3, lr_decay_fraction=0.5, val_every=1000,
                    log_every=100, dead_after_tokens=2_000_000, checkpoint_every=1000, seed=0)
"""Small k over a small dictionary: SAEs refit with other seeds find the same directions (median seed
stability 0.80 over all features, measured on this dump; expansion 8 / k 32 gave 0.27). Measured
alternatives (3 seeds each, same dump): exp 2 / k 16 / 1500 steps 0.54; exp 2 / k 16 / 4000 steps + decay
0.57. The price is reconstruction: held-out FVE ~0.90 instead of ~0.95."""
STABILITY_SEEDS = (1, 2)
"""The same recipe with other seeds: only their decoders are shipped (float16), for seed stability."""


def _dump(work: Path, progress: bool) -> ActivationDump:
    acts = work / "activations"
    if not (acts / "manifest.json").is_file():
        corpus = write_demo_corpus(work / "corpus", DEMO, progress=progress)
        adapter = get_adapter("coswara", corpus)
        recordings = adapter.recordings(tag=False, progress=progress)
        dump_activations(recordings, get_encoder(ENCODER, layer=LAYER), acts, HELDOUT_FRACTION, TRAIN.seed,
                         progress=progress, reader=adapter.read_sources)
    return ActivationDump(acts)


def build_stability_decoders(out: Path | None = None, work: Path = Path("runs/default_sae_build"),
                             progress: bool = True) -> Path:
    """Train the recipe with :data:`STABILITY_SEEDS` and ship their decoders (the seed-0 SAE is untouched)."""
    out = Path(out) if out is not None else DEFAULT_DIR
    dump = _dump(work, progress)
    decoders = {}
    for seed in STABILITY_SEEDS:
        sae = train_topk(dump.split("train"), dump.split("heldout"), work / f"seed_{seed}", replace(TRAIN, seed=seed),
                         progress=progress)
        decoders[f"seed_{seed}"] = sae.W_dec.detach().numpy().astype(np.float16)
    np.savez_compressed(out / STABILITY_FILE, **decoders)
    return out / STABILITY_FILE


def build_default_sae(out: Path | None = None, work: Path = Path("runs/default_sae_build"), progress: bool = True) -> Path:
    """Demo corpus -> GE2E layer-3 states (participant-held-out split) -> TopK training -> held-out eval."""
    out = Path(out) if out is not None else DEFAULT_DIR
    dump = _dump(work, progress)
    sae = train_topk(dump.split("train"), dump.split("heldout"), out, TRAIN, progress=progress)
    (out / "checkpoint.pt").unlink(missing_ok=True)  # the resumable state is not part of the artifact
    summary, density = evaluate(sae, dump.split("heldout").batches(4096))
    write_eval(summary, density, out, {"split": "heldout (participants never seen in training)"})
    meta = json.loads((out / "summary.json").read_text())
    meta.update({"artifact": "embedded default SAE (demo artifact: synthetic audio, not a model of real voices)",
                 "encoder": ENCODER, "layer": LAYER, "layer_convention": get_encoder(ENCODER, layer=LAYER).layer_convention,
                 "demo_corpus": asdict(DEMO), "heldout_fraction": HELDOUT_FRACTION,
                 "activation_dump": {k: dump.manifest[k] for k in ("encoder_id", "n_recordings", "dtype")},
                 "train_config": asdict(TRAIN)})
    (out / "summary.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    build_stability_decoders(out, work, progress)
    return out
