"""GPU checks (run only where a CUDA device is lent; CI has none): the code paths that take ``device``.

1. Reference-size TopK SAE (3840 -> 30,720, k = 128): CUDA fp32 codes equal the CPU codes (same indices,
   values to 1e-4), sparse decode equal, bf16 runs; encode throughput vs torch.matmul of the same shapes.
2. The embedded GE2E encoder + default SAE on CUDA equal the CPU states/codes.
3. transformers encoders (tiny random Whisper and wav2vec2 built from configs, offline) on CUDA fp32 equal CPU.

    python3 benchmarks/gpu_check.py            # prints one line per check; exit 1 if a check fails
    python3 benchmarks/gpu_check.py --device cpu --quick   # a smoke test of the script itself, anywhere
    python3 benchmarks/gpu_check.py --gemma-random --json gpu_check.json   # the 12B capture path (below)
    python3 benchmarks/gpu_check.py --gemma-random --tiny --device cpu     # its smoke test, anywhere

``--gemma-random`` builds a random-weight model from the Gemma 4 12B ``gemma4_unified`` shape (first 24
decoder layers; nothing is downloaded) and measures in one run: the bf16 matmul ceiling; raw layer-24
capture (audio-s/s, MFU, padding) for clip-count batches as shipped before and for token-budget
batches; end-to-end scoring (``score_recordings`` = what ``extract`` runs, with a 3840 -> 30,720 TopK-128
SAE on the GPU) on a 40-participant demo corpus and its ratio to raw capture on the same clips, and the
same at steady state (600 clips of 8 s, where the pipeline's fill and drain weigh ~5x less), eager and
compiled; an activation dump of those clips (float16 shards) vs raw capture; GPU utilisation; time
shares of each stage; and the one-off costs (first and remembered weight digests, model load, SAE
digest, serial / parallel / cached inventory). A random-weight model is a test double for the code path
and its speed; nothing it produces is a result.

Each section is independent: a missing optional package is reported and the rest still runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
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


def _gemma_config(tiny: bool):
    """The Gemma 4 12B decoder shape (``../shared/design/ENCODERS.md``: hidden 3840, MLP 15360, 16 query
    heads, 5 local (window 1024) : 1 full layers, vocab 262,144), truncated to 24 layers. KV heads (8),
    head dims (256 local, 512 global) are the transformers defaults scaled to 16 heads: stated in the JSON."""
    from transformers import Gemma4UnifiedConfig

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, global_head_dim=32, vocab_size=99, sliding_window=64,
                    layer_types=["sliding_attention"] * 5 + ["full_attention"], max_position_embeddings=4096)
        return Gemma4UnifiedConfig(text_config=text, audio_config={"audio_embed_dim": 640}, vision_config=None,
                                   audio_token_id=7, boa_token_id=5, eoa_token_index=6, image_token_id=8,
                                   video_token_id=9)
    text = dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=24, num_attention_heads=16,
                num_key_value_heads=8, head_dim=256, global_head_dim=512, vocab_size=262_144, sliding_window=1024,
                layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 4)
    return Gemma4UnifiedConfig(text_config=text, audio_config={"audio_embed_dim": 640}, vision_config=None)


def _attention_flops(n: int, layers: list[tuple[int, int | None]]) -> float:
    """QK^T and AV FLOPs of one sequence of n tokens through ``layers`` = (query width, window or None)
    per layer (no causal discount, the dense-FLOP convention of MFU)."""
    return sum(4.0 * n * (n if window is None else min(n, window)) * width for width, window in layers)


class _GpuSampler:
    """Mean GPU utilisation (NVML) sampled every 50 ms while a block runs; None where NVML is missing."""

    def __enter__(self):
        import threading

        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (CPU smoke test)
            self._thread = None
            return self

        def run():
            while not self._stop.wait(0.05):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


STEADY_CLIP_S = 8
"""Seconds of each steady-state clip (at 48 kHz, Coswara's rate)."""


#: Kernel (or, on the CPU, operator) names by kind, for the time shares of one captured pass.
_KINDS = (("matmul", ("gemm", "cutlass", "xmma", "nvjet", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear",
                      "aten::matmul")),
          ("attention", ("flash", "fmha", "attention", "attn")),
          ("copy", ("memcpy", "memset", "copy", "aten::to", "aten::_to_copy", "aten::contiguous")),
          ("norm_reduce", ("norm", "reduce", "mean", "rsqrt", "sum")),
          ("elementwise", ("elementwise", "vectorized", "unrolled", "aten::mul", "aten::add", "aten::gelu", "aten::tanh",
                           "aten::pow", "aten::cat", "aten::where", "aten::neg")))


def kernel_profile(fn) -> dict:
    """Where one call's device time goes: shares by kind (GEMM, attention, norms and reductions,
    elementwise, copies), the top kernels, and the host-device syncs it makes.

    Why: raw capture's eager MFU was 32% on an H200 and 47% compiled; a lent GPU run is short and rare, so
    the run that measures the speed also says which kernels hold it back.
    On the CPU (the smoke test) the same summary is of operators' own CPU time.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    on_gpu = DEVICE == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        fn()
        sync()
    events = prof.key_averages()

    def own(e) -> float:  # microseconds of the event itself
        return float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0)) if on_gpu \
            else float(e.self_cpu_time_total)

    timed = [e for e in events if (e.device_type == DeviceType.CUDA if on_gpu else e.key.startswith("aten::"))]
    total = sum(own(e) for e in timed) or 1.0
    shares: dict[str, float] = {}
    for e in timed:
        name = e.key.lower()
        kind = next((k for k, words in _KINDS if any(w in name for w in words)), "other")
        shares[kind] = shares.get(kind, 0.0) + own(e)
    calls = {e.key: e.count for e in events}
    top = sorted(timed, key=own, reverse=True)[:12]
    return {"measured": "CUDA kernel time" if on_gpu else "CPU operator self time",
            "total_s": round(total / 1e6, 4),
            "shares": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
            "top": [{"name": e.key[:90], "calls": e.count, "share": round(own(e) / total, 3)} for e in top],
            "syncs": {name: calls.get(name, 0) for name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                            "aten::_local_scalar_dense", "aten::nonzero", "aten::item")}}


def steady_state_files(folder: Path, n: int) -> pd.DataFrame:
    """``n`` WAVs of 8 s at 48 kHz (16-bit noise; the encoder's speed does not depend on content) and the
    Recording-table columns scoring reads."""
    import soundfile as sf

    from clinical_transfer.hashing import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, (0.05 * rng.standard_normal(STEADY_CLIP_S * 48000)).astype(np.float32), 48000,
                 subtype="PCM_16")
        rows.append({"recording_id": f"clip{i:04d}", "participant_id": f"p{i // 8:03d}", "segment_group": "vowel",
                     "recording_type": "vowel-a", "status": "ok", "status_reason": "", "source": str(path),
                     "audio_sha256": sha256_file(path)})
    return pd.DataFrame(rows)


def steady_state(enc, sae, digest: str, table, work: Path, precisions: tuple[str, ...], inventory: bool = True,
                 tag: str = "") -> dict:
    """End to end vs raw capture on ``table``'s clips; with ``inventory``, the inventory's serial and pooled
    cost per recording on them (the pool's server is up by now: its start is measured in section 6)."""
    from concurrent.futures import ThreadPoolExecutor

    from clinical_transfer.audio import AudioCheckConfig, load_mono
    from clinical_transfer.scoring import score_recordings
    from dataset_adapters.inventory import Inspector

    out: dict = {"clips": len(table)}
    if inventory:
        datas = [Path(p).read_bytes() for p in table["source"]]
        per_rec = {}
        for label, workers, items in (("serial", 1, datas[:48]), ("pool", None, datas)):
            t = time.perf_counter()
            with Inspector(AudioCheckConfig(), workers=workers) as insp:
                rows = [r for i, d in enumerate(items) for r in insp.submit(i, "vowel-a", d)] + list(insp.finish())
            per_rec[label] = 1000 * (time.perf_counter() - t) / len(rows)
        out["inventory_ms_per_recording"] = {k: round(v, 2) for k, v in per_rec.items()}
        out["inventory_speedup_pool"] = round(per_rec["serial"] / per_rec["pool"], 1)
    with ThreadPoolExecutor(8) as ex:
        clips = list(ex.map(lambda p: load_mono(p, 16000)[0], table["source"]))
    audio = sum(len(y) for y in clips) / 16000
    enc.device_hidden_states(clips[:64])  # warm (and, compiled, the clips' shapes)
    raw = audio / timed_on_device(lambda: enc.device_hidden_states(clips), 1)
    clips.clear()  # ~0.3 GB of waveforms not needed by the end-to-end runs
    out.update(audio_s=round(audio, 1), raw_capture_audio_s_per_s=round(raw, 1))
    for precision in precisions:
        with _GpuSampler() as gpu:
            t = time.perf_counter()
            summary = score_recordings(table, enc, sae, work / f"steady_store_{precision}{tag}",
                                       work / f"steady_cache_{precision}{tag}", "bench", progress=False,
                                       sae_digest=digest, sae_precision=precision)
            sec = time.perf_counter() - t
        rate = summary.audio_seconds / sec
        out[precision] = {"audio_s_per_s": round(rate, 1), "ratio_to_raw": round(rate / raw, 3), "seconds": round(sec, 2),
                          "stage_seconds": summary.seconds, "gpu_utilisation_pct": gpu.mean}
    return out


def gemma_random_section(tiny: bool, json_path: Path) -> dict:
    import json
    import platform
    import shutil

    import transformers
    from transformers import Gemma4UnifiedForConditionalGeneration

    from clinical_transfer.audio import load_mono
    from clinical_transfer.encoders.base import plan_batches
    from clinical_transfer.encoders.hf import GemmaAudioEncoder, _dir_digest
    from clinical_transfer.run.models import checkpoint_sae_hash
    from clinical_transfer.sae import SAEConfig, SparseAutoencoder
    from clinical_transfer.sae.formats import load_sae, save_pt
    from clinical_transfer.scoring import score_recordings
    from dataset_adapters.coswara import CoswaraAdapter
    from dataset_adapters.demo import DemoConfig, write_demo_corpus

    t_all = time.perf_counter()
    dev = torch.device(DEVICE)
    peak = 989e12  # H100/H200 SXM dense bf16 (datasheet), the MFU denominator
    work = Path(tempfile.mkdtemp(prefix="gemma_random_"))
    os.environ.setdefault("CLINICAL_TRANSFER_DIGEST_CACHE", str(work / "digests"))
    rep: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "tiny": tiny,
                 "torch": torch.__version__, "transformers": transformers.__version__,
                 "python": platform.python_version(), "cpu_cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                 "peak_bf16_flops": peak, "note": "random weights: a test double for the code path and its speed"}

    def save():
        rep["elapsed_s"] = round(time.perf_counter() - t_all, 1)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep, indent=2))

    # 1. the matmul ceiling
    n = 1024 if tiny else 8192
    mat = torch.randn(n, n, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    rep["matmul_ceiling_tflops"] = round(2 * n**3 / timed_on_device(lambda: mat @ mat, 10) / 1e12, 1)
    mat = None
    print(f"matmul ceiling: {rep['matmul_ceiling_tflops']} TFLOP/s", flush=True)

    # 2. the random-weight model, saved like a real checkpoint
    cfg = _gemma_config(tiny)
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        model = Gemma4UnifiedForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16 if dev.type == "cuda"
                                                                    else torch.float32)
    lm = model.model.language_model
    attn = [(layer.self_attn.q_proj.out_features,
             cfg.text_config.sliding_window if kind == "sliding_attention" else None)
            for layer, kind in zip(lm.layers, cfg.text_config.layer_types)]
    p_layers = sum(p.numel() for p in lm.layers.parameters())
    p_audio = sum(p.numel() for name, p in model.named_parameters() if "audio" in name)
    rep["model"] = {"config": {k: v for k, v in cfg.text_config.to_dict().items() if not isinstance(v, (list, dict))},
        "assumed": "num_key_value_heads 8, head_dim 256, global_head_dim 512 (not in ENCODERS.md)",
        "parameters": sum(p.numel() for p in model.parameters()), "decoder_layer_parameters": p_layers,
        "audio_projection_parameters": p_audio, "build_s": round(time.perf_counter() - t, 1)}
    path = work / "model"
    t = time.perf_counter()
    model.save_pretrained(path)
    rep["model"]["save_s"] = round(time.perf_counter() - t, 1)
    rep["model"]["bytes_on_disk"] = sum(f.stat().st_size for f in path.glob("*"))
    del model, lm
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    print(f"model: {rep['model']['parameters'] / 1e9:.2f} B parameters, {rep['model']['bytes_on_disk'] / 1e9:.1f} GB", flush=True)
    save()

    # 3. one-off costs: weight digests (first run / remembered), load
    dtype_name = str(torch.bfloat16 if dev.type == "cuda" else torch.float32)
    t = time.perf_counter()
    _dir_digest(path, f"gemma:24:{dtype_name}")
    first_digest = time.perf_counter() - t
    t = time.perf_counter()
    enc = GemmaAudioEncoder(path, layer=cfg.text_config.num_hidden_layers, device=DEVICE)
    load = time.perf_counter() - t
    t = time.perf_counter()
    _dir_digest(path, f"gemma:24:{dtype_name}")
    cached_digest = time.perf_counter() - t
    rep["one_off_s"] = {"encoder_digest_first_run": round(first_digest, 2), "encoder_digest_remembered": round(cached_digest, 3),
                        "encoder_load_incl_id": round(load, 2)}
    print(f"one-off: digest first {first_digest:.1f} s, remembered {cached_digest:.3f} s, load {load:.1f} s", flush=True)
    save()

    # 4. raw capture on 64 clips of 3-20 s
    rng = np.random.default_rng(0)
    secs = rng.uniform(3, 20, 8 if tiny else 64)
    clips = [(0.05 * rng.normal(size=int(s * 16000))).astype(np.float32) for s in secs]
    audio_s = float(secs.sum())

    def flops(lengths_real: list[int]) -> float:
        return sum(2.0 * (p_layers + p_audio) * n_ + _attention_flops(n_, attn) for n_ in lengths_real)

    tok = [int(np.ceil(len(y) / 640)) + 3 for y in clips]
    work_flops = flops(tok)
    rep["raw_capture"] = {"clips": len(clips), "audio_s": round(audio_s, 1), "tokens": sum(tok),
                          "tflop_per_pass": round(work_flops / 1e12, 2), "settings": []}
    settings = [("8 clips per pass (as shipped before)", 10**9, 1e9, 8)]
    settings += [(f"token budget {b}", b, 0.1, 256) for b in ((1024, 2048) if tiny else (8192, 16384, 32768))]
    for label, budget, pad, items in settings:
        enc.max_tokens, enc.max_padding, enc.batch_size = budget, pad, items
        plan = plan_batches(tok, budget, pad, items)
        padded = sum(len(p) * max(tok[i] for i in p) for p in plan)
        sec = timed_on_device(lambda: enc.device_hidden_states(clips), 1 if tiny else 3)
        row = {"setting": label, "passes": len(plan), "padding": round(padded / sum(tok) - 1, 3),
               "audio_s_per_s": round(audio_s / sec, 1), "mfu": round(work_flops / sec / peak, 4), "seconds": round(sec, 3)}
        rep["raw_capture"]["settings"].append(row)
        print(f"raw capture, {label}: {row}", flush=True)
        save()
    best = max(rep["raw_capture"]["settings"][1:], key=lambda r: r["audio_s_per_s"])
    budget = int(best["setting"].split()[-1])
    enc.max_tokens, enc.max_padding, enc.batch_size = budget, 0.1, 256
    try:  # where the eager pass's time goes (shares by kernel kind, top kernels, syncs): ~2 passes of time
        rep["raw_capture"]["kernel_profile"] = kernel_profile(lambda: enc.device_hidden_states(clips))
    except Exception as exc:  # noqa: BLE001 - a diagnostic: report it, the measurements go on
        rep["raw_capture"]["kernel_profile"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"kernel profile: {rep['raw_capture']['kernel_profile']}", flush=True)
    save()

    # 5. the reference-size SAE on disk, its digest first / remembered
    d_sae, k = (256, 16) if tiny else (30720, 128)
    sae = SparseAutoencoder(SAEConfig(enc.width, d_sae, "topk", k))
    with torch.no_grad():
        sae.W_enc.normal_(0, enc.width**-0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    sae_path = save_pt(sae, work / "sae.pt")
    sae = load_sae(sae_path, d_in_expected=enc.width)
    t = time.perf_counter()
    digest = checkpoint_sae_hash(sae_path, None, sae)
    rep["one_off_s"]["sae_digest_first_run"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    checkpoint_sae_hash(sae_path, None, sae)
    rep["one_off_s"]["sae_digest_remembered"] = round(time.perf_counter() - t, 3)

    # 6. inventory of a 40-participant demo corpus: serial (as before), parallel, cached
    # 8 s clips at 48 kHz (Coswara's rate: resampling is part of the decode work), 2,856 s in all
    corpus = write_demo_corpus(work / "demo", DemoConfig(n_participants=12 if tiny else 40, duration_s=8.0,
                                                         sample_rate_hz=48000), progress=False)
    inv = {}
    # parallel first: it pays the fork server's start (imports + warm-up); serial then runs warm
    for label, workers, cache in (("parallel", None, work / "inv_cache"), ("serial", 1, None),
                                  ("parallel_server_up", None, work / "inv_cache2"),
                                  ("parallel_cached", None, work / "inv_cache")):
        t = time.perf_counter()
        table = CoswaraAdapter(corpus, workers=workers, inspect_cache=cache).recordings(progress=False)
        inv[label] = round(time.perf_counter() - t, 2)
    inv["recordings"] = len(table)
    inv["speedup_parallel"] = round(inv["serial"] / inv["parallel"], 1)
    inv["speedup_cached"] = round(inv["serial"] / inv["parallel_cached"], 1)
    inv["speedup_server_up"] = round(inv["serial"] / inv["parallel_server_up"], 1)
    inv["serial_ms_per_recording"] = round(1000 * inv["serial"] / len(table), 1)
    rep["inventory_s"] = inv
    print(f"inventory: {inv}", flush=True)
    save()

    # 7. end to end (score_recordings = extract's scoring) vs raw capture on the same clips
    ok = table[table["status"] == "ok"]
    demo_clips = [load_mono(p, 16000)[0] for p in ok["source"]]
    demo_audio = sum(len(y) for y in demo_clips) / 16000
    enc.device_hidden_states(demo_clips[:16])  # warm
    sec_raw = timed_on_device(lambda: enc.device_hidden_states(demo_clips), 1 if tiny else 2)
    rep["extract"] = {"raw_capture_audio_s_per_s": round(demo_audio / sec_raw, 1)}
    for precision in ("fp32", "tf32"):
        with _GpuSampler() as gpu:
            t = time.perf_counter()
            summary = score_recordings(table, enc, sae, work / f"store_{precision}", work / f"cache_{precision}", "bench",
                                       progress=False, sae_digest=digest, sae_precision=precision)
            sec_e2e = time.perf_counter() - t
        rep["extract"][precision] = {
            "recordings": summary.encoded, "audio_s": round(summary.audio_seconds, 1),
            "audio_s_per_s": round(summary.audio_seconds / sec_e2e, 1),
            "ratio_to_raw": round((summary.audio_seconds / sec_e2e) / (demo_audio / sec_raw), 3),
            "seconds": round(sec_e2e, 2), "stage_seconds": summary.seconds, "gpu_utilisation_pct": gpu.mean}
    print(f"extract: {rep['extract']}", flush=True)
    # the on-device aggregation equals the host numpy aggregation of the same codes, byte for byte
    from clinical_transfer.scoring import aggregate_codes, on_device_sae
    from clinical_transfer.store import aggregate

    states = enc.device_hidden_states(demo_clips[:24])
    codes = on_device_sae(sae, dev).encode_sparse(torch.cat(states).float(), batch_size=8192, sort=False)
    got = aggregate_codes(codes.indices, codes.values, [len(x) for x in states], d_sae)
    ci, cv, start, same = codes.indices.cpu().numpy(), codes.values.float().cpu().numpy(), 0, True
    for x, g in zip(states, got):
        w = aggregate(ci[start : start + len(x)], cv[start : start + len(x)], d_sae)
        same &= all(getattr(g, f).tobytes() == getattr(w, f).tobytes() for f in ("features", "mean", "frac_active", "max"))
        start += len(x)
    rep["extract"]["device_aggregation_equals_numpy"] = bool(same)
    check("on-device aggregation == numpy aggregation of the same codes", same, f"{len(states)} recordings")
    save()

    # 600 clips of 8 s at 48 kHz written as WAV (decode + resample are part of the work): the demo's
    # 2,856 s are ~2 s of GPU work, so the pipeline's fill (first chunk's decode) and drain (last chunk's
    # aggregates and writes) weigh on its ratio far more than on a corpus (Coswara: ~65 h)
    steady = steady_state_files(work / "steady", 48 if tiny else 600)

    # 8. torch.compile of the decoder (before the steady-state sections: it is the MFU figure; the eager
    # decoder is put back afterwards)
    if not tiny and time.perf_counter() - t_all < 200 and dev.type == "cuda":
        eager = enc.model.language_model
        try:
            enc.model.language_model = torch.compile(eager, dynamic=True)
            t = time.perf_counter()
            enc.device_hidden_states(clips)
            compile_s = time.perf_counter() - t
            sec = timed_on_device(lambda: enc.device_hidden_states(clips), 3)
            rep["raw_capture"]["compiled"] = {"setting": f"token budget {budget}, torch.compile", "first_call_s": round(compile_s, 1),
                                              "audio_s_per_s": round(audio_s / sec, 1), "mfu": round(work_flops / sec / peak, 4)}
            save()
            enc.device_hidden_states(demo_clips[:300])  # shapes of the demo clips
            sec_raw_c = timed_on_device(lambda: enc.device_hidden_states(demo_clips), 2)
            t = time.perf_counter()
            summary = score_recordings(table, enc, sae, work / "store_c", work / "score_cache_c", "bench", progress=False,
                                       sae_digest=digest, sae_precision="tf32")
            sec_c = time.perf_counter() - t
            rep["extract_compiled_tf32"] = {"raw_capture_audio_s_per_s": round(demo_audio / sec_raw_c, 1),
                                       "audio_s_per_s": round(summary.audio_seconds / sec_c, 1),
                                       "ratio_to_raw": round((summary.audio_seconds / sec_c) / (demo_audio / sec_raw_c), 3),
                                       "stage_seconds": summary.seconds}
            save()
            rep["steady_state_compiled"] = steady_state(enc, sae, digest, steady, work, ("tf32",), inventory=False,
                                                        tag="_c")
        except Exception as exc:  # report, do not fail the run
            rep["raw_capture"]["compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            enc.model.language_model = eager
        print(f"compiled: {rep['raw_capture']['compiled']}", flush=True)
        save()

    # 9. steady state, eager: end to end fp32 / tf32 vs raw capture on the 600 clips; the inventory's
    # per-recording cost serial vs the pool on them
    try:  # one lent GPU run is all there is: a failing section is reported and the next one still runs
        rep["steady_state"] = steady_state(enc, sae, digest, steady, work, ("fp32", "tf32"))
    except Exception as exc:  # noqa: BLE001
        rep["steady_state"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"steady state: {rep['steady_state']}", flush=True)
    save()

    # 10. an activation dump of the 600 clips (float16 shards, the SAE-training path at other layers)
    try:
        from clinical_transfer.activations import dump_activations

        audio = float(STEADY_CLIP_S * len(steady))
        t = time.perf_counter()
        dump = dump_activations(steady, enc, work / "dump", progress=False)
        sec = time.perf_counter() - t
        size = sum(f.stat().st_size for f in dump.glob("*.npy"))
        raw = rep["steady_state"].get("raw_capture_audio_s_per_s")
        rep["activation_dump"] = {"audio_s_per_s": round(audio / sec, 1), "seconds": round(sec, 2),
                                  "ratio_to_raw": round(audio / sec / raw, 3) if raw else None,
                                  "gb_written": round(size / 1e9, 2)}
    except Exception as exc:  # noqa: BLE001
        rep["activation_dump"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"activation dump: {rep['activation_dump']}", flush=True)
    save()
    shutil.rmtree(work, ignore_errors=True)
    return rep


def main() -> int:
    global DEVICE, QUICK
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small timing loops (a smoke test of the script)")
    ap.add_argument("--gemma-random", action="store_true", help="the 12B capture path on a random-weight model")
    ap.add_argument("--tiny", action="store_true", help="with --gemma-random: a tiny model (smoke test, any device)")
    ap.add_argument("--json", default="gpu_check.json", help="where --gemma-random writes its summary")
    args = ap.parse_args()
    DEVICE, QUICK = args.device, args.quick
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    if args.gemma_random:
        gemma_random_section(args.tiny, Path(args.json))
        print(f"summary written to {args.json}")
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
