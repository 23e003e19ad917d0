"""GPU checks (run only where a CUDA device is lent; CI has none): the code paths that take ``device``.

1. Reference-size TopK SAE (3840 -> 30,720, k = 128): CUDA fp32 codes equal the CPU codes (same indices,
   values to 1e-4), sparse decode equal, bf16 runs; encode throughput vs torch.matmul of the same shapes.
2. The embedded GE2E encoder + default SAE on CUDA equal the CPU states/codes.
3. transformers encoders (tiny random Whisper and wav2vec2 built from configs, offline) on CUDA fp32 equal CPU.

    python3 benchmarks/gpu_check.py            # prints one line per check; exit 1 if a check fails
    python3 benchmarks/gpu_check.py --device cpu --quick   # a smoke test of the script itself, anywhere

Each section is independent: a missing optional package is reported and the rest still runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.tiny_models, from any folder

FAILED: list[str] = []
DEVICE = "cuda"
QUICK = False


def check(name: str, ok: bool, detail: str) -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed_on_device(fn, repeats: int = 5) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sae_section() -> None:
    from clinical_transfer.sae import SAEConfig, SparseAutoencoder

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity means real fp32 products
    d, w, k = (384, 3072, 32) if QUICK else (3840, 30720, 128)
    torch.manual_seed(0)
    cpu = SparseAutoencoder(SAEConfig(d, w, "topk", k))
    with torch.no_grad():
        cpu.W_enc.normal_(0, d**-0.5)
        cpu.W_dec.copy_(cpu.W_enc.T)
        cpu.b_dec.normal_()
    gpu = SparseAutoencoder(SAEConfig(d, w, "topk", k), device=DEVICE)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2048, d)
    a, b = cpu.encode_sparse(x), gpu.encode_sparse(x.to(DEVICE))
    same = (a.indices == b.indices.cpu()).all(dim=1)
    vals = (a.values[same] - b.values.cpu()[same]).abs().max().item()
    check("SAE fp32 CUDA codes == CPU", same.float().mean().item() > 0.99 and vals < 1e-4,
          f"{same.float().mean().item():.4f} of tokens with identical index sets (ties at the k-th value may "
          f"differ), max |value diff| {vals:.2e}")
    xa, xb = cpu.decode_sparse(a), gpu.decode_sparse(b).cpu()
    rel = ((xa[same] - xb[same]).norm() / xa[same].norm()).item()
    check("SAE sparse decode CUDA == CPU", rel < 1e-5, f"relative difference {rel:.2e}")
    half = SparseAutoencoder(SAEConfig(d, w, "topk", k), dtype=torch.bfloat16, device=DEVICE)
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in cpu.state_dict().items()})
    c = half.encode_sparse(x.to(DEVICE))
    overlap = np.mean([len(set(i.tolist()) & set(j.tolist())) / k for i, j in zip(a.indices[:256], c.indices.cpu()[:256])])
    check("SAE bf16 CUDA runs", overlap > 0.8, f"mean overlap of the top-{k} sets with fp32: {overlap:.3f}")

    tokens = 2048 if QUICK else 65536
    xg = torch.randn(tokens, d, device=DEVICE)
    for dtype, model in (("fp32", gpu), ("bf16", half)):
        xx = xg.to(model.W_enc.dtype)
        for batch in ((1024,) if QUICK else (4096, 16384)):
            enc = timed_on_device(lambda m=model, x=xx, b=batch: m.encode_sparse(x, batch_size=b, sort=False))

            def mm(model=model, xx=xx, batch=batch):
                with torch.inference_mode():
                    for lo in range(0, tokens, batch):
                        torch.matmul(xx[lo : lo + batch], model.W_enc)

            base = timed_on_device(mm)
            flops = 2 * tokens * d * w
            print(f"      {dtype} batch {batch}: encode {tokens / enc:,.0f} tokens/s ({flops / enc / 1e12:.1f} TFLOP/s), "
                  f"matmul {tokens / base:,.0f} tokens/s; ratio {base / enc:.2f}", flush=True)


def ge2e_section() -> None:
    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.sae.default import load_default_sae

    torch.backends.cudnn.allow_tf32 = False  # cuDNN's LSTM would otherwise run in TF32
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    clips = [(0.1 * np.sin(2 * np.pi * 140 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32),
             rng.normal(0, 0.05, 16000 * 2).astype(np.float32)]
    cpu, gpu = get_encoder("ge2e"), get_encoder("ge2e", device=DEVICE)
    sa, sb = cpu.hidden_states(clips), [s.cpu() for s in gpu.hidden_states(clips)]
    diff = max((x - y).abs().max().item() for x, y in zip(sa, sb))
    scale = max(x.abs().max().item() for x in sa)
    check("GE2E states CUDA == CPU", diff < 1e-4 * max(scale, 1.0),
          f"max |diff| {diff:.2e} (max |state| {scale:.2f}) over {sum(len(s) for s in sa)} frames")
    sae = load_default_sae()
    za = sae.encode(torch.cat(sa))
    sae_gpu = load_default_sae().to(DEVICE)
    zb = sae_gpu.encode(torch.cat(sb).to(DEVICE)).cpu()
    agree = ((za > 0) == (zb > 0)).float().mean().item()
    check("GE2E + default SAE codes CUDA == CPU", agree > 0.999, f"{agree:.5f} of code entries agree on being active")


def hf_section() -> None:
    from clinical_transfer.encoders import get_encoder
    from tests.tiny_models import save_tiny_wav2vec2, save_tiny_whisper

    y = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    for name, save, layer in (("Whisper", save_tiny_whisper, 2), ("wav2vec2", save_tiny_wav2vec2, 1)):
        with tempfile.TemporaryDirectory() as tmp:
            save(tmp)
            a = get_encoder("hf-encoder", model=tmp, layer=layer).hidden_states([y])[0]
            b = get_encoder("hf-encoder", model=tmp, layer=layer, device=DEVICE, dtype="float32").hidden_states([y])[0]
            b = b.cpu()
            check(f"{name} encoder CUDA == CPU", a.shape == b.shape and torch.allclose(a, b, atol=1e-4),
                  f"shape {tuple(b.shape)}, max |diff| {(a - b).abs().max().item():.2e}")


def main() -> int:
    global DEVICE, QUICK
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small timing loops (a smoke test of the script)")
    args = ap.parse_args()
    DEVICE, QUICK = args.device, args.quick
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print(f"torch {torch.__version__}, {name}{' (quick: a small SAE)' if QUICK else ''}", flush=True)
    for section in (sae_section, ge2e_section, hf_section):
        try:
            section()
        except Exception:  # report and go on: one missing package must not hide the other checks
            FAILED.append(section.__name__)
            print(f"[FAIL] {section.__name__} raised:\n{traceback.format_exc()}", flush=True)
    print("all GPU checks passed" if not FAILED else f"failed: {', '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
