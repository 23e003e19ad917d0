"""TopK SAE trainer (the reference recipe): Adam, unit-norm decoder, AuxK for dead latents.

Why these pieces (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): TopK fixes L0 without
an L1 penalty; decoder rows kept at unit norm (and their gradient's parallel part removed) stop the
encoder from cheating with scale; the AuxK loss lets dead latents explain the residual and come back;
b_dec starts at the data median so the first steps are not spent finding the centre. Activations can be
normalised to mean squared norm d_in so one learning rate fits any encoder; the scale is folded back into
the saved weights, so the saved SAE reads raw activations.

Deterministic on CPU for a given seed; checkpoints (model, optimiser, step, dead-latent counters, RNG)
make a killed run resumable.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.files import atomic_file
from clinical_transfer.sae.evaluate import evaluate
from clinical_transfer.sae.formats import save_pt
from clinical_transfer.sae.model import SAEConfig, SparseAutoencoder


@dataclass
class TrainConfig:
    expansion: int = 8
    """d_sae = expansion x d_in (reference: 8)."""
    k: int = 128  # active features per token (TopK)
    batch_size: int = 4096  # tokens per optimiser step
    steps: int = 100_000
    lr: float | None = None
    """None -> 2e-4 / sqrt(d_sae / 16384), the scaling of the reference recipe."""
    lr_decay_fraction: float = 0.0
    """Final fraction of the steps over which the learning rate falls linearly to 0 (0 = constant). A
    decayed run ends nearer a minimum, so SAEs refit with other seeds agree more (seed stability)."""
    aux_k: int | None = None
    """Dead latents used by AuxK (None -> d_in // 2)."""
    aux_coef: float = 1.0 / 32
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many training tokens counts as dead."""
    normalize_activations: bool = True
    b_dec_init: str = "median"
    """median | mean | zero."""
    seed: int = 0
    log_every: int = 50
    val_every: int = 500
    checkpoint_every: int = 1000


def _init(sae: SparseAutoencoder, sample: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> None:
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    with torch.no_grad():
        W = torch.randn(d_sae, d_in, generator=gen)
        W /= W.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W.T)
        sae.b_enc.zero_()
        if cfg.b_dec_init == "median":
            sae.b_dec.copy_(sample.median(dim=0).values)
        elif cfg.b_dec_init == "mean":
            sae.b_dec.copy_(sample.mean(dim=0))
        else:
            sae.b_dec.zero_()


#: Settings a resumed run may change: they stop or log it, they do not change its trajectory.
RESUMABLE_CHANGES = ("steps", "log_every", "val_every", "checkpoint_every")


def _trajectory_settings(cfg: TrainConfig, d_in: int) -> dict:
    return {**{k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}, "d_in": d_in}


def _resume_state(ckpt: Path, settings: dict) -> dict:
    """The checkpoint of an interrupted run, if it was made with the same settings (else one clear error:
    resuming would splice two different trainings into one SAE)."""
    fix = f"start over with a new --out, or delete {ckpt}"
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # tensors, ints, dicts: no code unpickled
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind
        raise ClinicalTransferError(f"the training checkpoint {ckpt} cannot be read ({type(exc).__name__})", fix) from exc
    saved = json.loads(state.get("settings", "{}"))
    changed = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
    if saved and changed:
        what = ", ".join(f"{k} {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ClinicalTransferError(f"{ckpt} is from a run with other settings ({what}); resuming would mix two "
                                    f"trainings (only {', '.join(RESUMABLE_CHANGES)} may change)", fix)
    return state


def _project_decoder_grad(sae: SparseAutoencoder) -> None:
    """Remove the gradient component parallel to each (unit-norm) decoder row."""
    if sae.W_dec.grad is not None:
        W = sae.W_dec.data
        sae.W_dec.grad -= (sae.W_dec.grad * W).sum(dim=1, keepdim=True) * W


def train_topk(
    train,
    val,
    out: str | Path,
    cfg: TrainConfig = TrainConfig(),
    progress: bool = True,
    stop_after: int | None = None,
) -> SparseAutoencoder:
    """Train a TopK SAE on activations ``train`` (tokens, d_in); writes sae.pt, summary.json, logs.

    ``train`` is a tensor or any object with ``len``, ``shape`` and row indexing by an index tensor
    (e.g. :class:`clinical_transfer.activations.TokenArray` over memory-mapped shards); ``val`` is a
    tensor, a ``TokenArray`` or None.

    ``stop_after`` ends the run after that many steps of *this* call (a simulated interruption for
    resume tests); re-running with the same arguments resumes from ``out/checkpoint.pt``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    d_in = int(train.shape[1])
    d_sae = cfg.expansion * d_in
    sample = train[torch.randperm(len(train), generator=gen)[: min(len(train), 32768)]].to(torch.float32)
    scale = math.sqrt(d_in / float(sample.pow(2).sum(1).mean())) if cfg.normalize_activations else 1.0
    sae = SparseAutoencoder(SAEConfig(d_in, d_sae, "topk", cfg.k))
    _init(sae, sample * scale, cfg, gen)
    lr = cfg.lr if cfg.lr is not None else 2e-4 / math.sqrt(d_sae / 16384)
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    aux_k = cfg.aux_k or max(d_in // 2, 1)
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    step = 0
    ckpt = out / "checkpoint.pt"
    settings = _trajectory_settings(cfg, d_in)
    if ckpt.is_file():
        state = _resume_state(ckpt, settings)
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        since_fired, step = state["since_fired"], state["step"]
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
    else:
        for name in ("train_metrics.jsonl", "validation_metrics.jsonl"):
            (out / name).write_text("")
    n = len(train)
    bar = tqdm(total=cfg.steps, initial=step, desc="train-sae", unit="step", disable=None if progress else True)
    done_here = 0
    while step < cfg.steps:
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        x = train[idx].to(torch.float32) * scale
        pre = sae.pre_activations(x)
        vals, top = torch.relu(pre).topk(cfg.k, dim=-1, sorted=False)
        z = torch.zeros_like(pre).scatter(-1, top, vals)
        x_hat = sae.decode(z)
        err = x - x_hat
        mse = err.pow(2).sum(-1).mean()
        fired = torch.zeros(d_sae, dtype=torch.bool)
        fired[top[vals > 0]] = True
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + len(x))
        dead = since_fired >= cfg.dead_after_tokens
        aux = torch.zeros(())
        if dead.any():
            k_aux = min(aux_k, int(dead.sum()))
            dead_pre = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
            a_vals, a_top = torch.relu(dead_pre).topk(k_aux, dim=-1, sorted=False)
            e_hat = torch.zeros_like(pre).scatter(-1, a_top, a_vals) @ sae.W_dec
            resid = err.detach()
            aux = (resid - e_hat).pow(2).sum(-1).mean() / (resid - resid.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
            aux = torch.nan_to_num(aux, nan=0.0)
        loss = mse + cfg.aux_coef * aux
        if cfg.lr_decay_fraction > 0:
            decay_from = cfg.steps * (1.0 - cfg.lr_decay_fraction)
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, max(0.0, (cfg.steps - step) / max(cfg.steps - decay_from, 1.0)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _project_decoder_grad(sae)
        opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        step += 1
        done_here += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            var = (x - x.mean(0)).pow(2).sum(-1).mean()
            rec = {"step": step, "loss": loss.item(), "mse": mse.item(), "aux_loss": aux.item(),
                   "fve": (1 - mse / var).item(), "l0": (z > 0).sum(-1).float().mean().item(),
                   "dead_fraction": float(dead.float().mean()), "lr": lr}
            with open(out / "train_metrics.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            summary, _ = evaluate(_unscaled(sae, scale), _val_batches(val, cfg.batch_size))
            with open(out / "validation_metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, **asdict(summary)}) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or (stop_after and done_here >= stop_after):
            # written beside and renamed: a run killed mid-save keeps its previous checkpoint, never half of one
            with atomic_file(ckpt) as fh:
                torch.save({"sae": sae.state_dict(), "opt": opt.state_dict(), "since_fired": since_fired, "step": step,
                            "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                            "settings": json.dumps(settings, sort_keys=True)}, fh)
        if stop_after and done_here >= stop_after and step < cfg.steps:
            bar.close()
            return _unscaled(sae, scale)
    bar.close()
    final = _unscaled(sae, scale)
    save_pt(final, out / "sae.pt")
    summary = {"d_in": d_in, "d_sae": d_sae, "k": cfg.k, "train_tokens": n, "steps": cfg.steps,
               "activation_scale": scale, "train_config": asdict(cfg), "lr": lr}
    if val is not None:
        s, _ = evaluate(final, _val_batches(val, cfg.batch_size))
        summary["validation"] = asdict(s)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return final


def _val_batches(val, batch_size: int):
    return val.split(batch_size) if isinstance(val, torch.Tensor) else val.batches(batch_size)


def _unscaled(sae: SparseAutoencoder, scale: float) -> SparseAutoencoder:
    """The same SAE reading raw activations: W_enc·s, W_dec/s, b_dec/s (TopK choices unchanged)."""
    out = SparseAutoencoder(sae.cfg)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc * scale)
        out.b_enc.copy_(sae.b_enc)
        out.W_dec.copy_(sae.W_dec / scale)
        out.b_dec.copy_(sae.b_dec / scale)
    return out


def planted_dictionary(n: int, d_in: int, n_atoms: int, active: int, seed: int = 0, noise: float = 0.0):
    """Synthetic x = z D with known unit-norm atoms D (n_atoms, d_in) and `active` non-zeros per row."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_atoms, d_in, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    z = torch.zeros(n, n_atoms)
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:active] for _ in range(n)])
    z.scatter_(1, idx, torch.rand(n, active, generator=g) * 2 + 0.5)
    x = z @ D + noise * torch.randn(n, d_in, generator=g)
    return x, D


def atom_recovery(sae: SparseAutoencoder, D: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of planted atoms whose best-matching decoder row has cosine similarity > threshold."""
    W = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    cos = (D / D.norm(dim=1, keepdim=True)) @ W.T
    return float((cos.max(dim=1).values > threshold).float().mean())
