"""Benchmark: TopK encode (3840 -> 30,720, k = 128) tokens/s on CPU vs torch.matmul of the same shapes.

    .venv/bin/python benchmarks/bench_sae.py [--tokens 2048] [--batch 1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clinical_transfer.sae import SAEConfig, SparseAutoencoder


def main() -> None:
    ap = argparse.ArgumentParser(description="TopK encode throughput vs a bare matmul of the same shapes")
    for flag, default in (("--tokens", 2048), ("--batch", 1024), ("--d-in", 3840), ("--d-sae", 30720), ("--k", 128),
                          ("--repeats", 3)):
        ap.add_argument(flag, type=int, default=default)
    args = ap.parse_args()
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(args.d_in, args.d_sae, "topk", args.k))
    with torch.no_grad():
        sae.W_enc.normal_(0, args.d_in**-0.5)
        sae.b_dec.normal_()
    x = torch.randn(args.tokens, args.d_in)
    sae.encode_sparse(x[:64])  # warm-up

    def t_encode():
        t0 = time.perf_counter()
        sae.encode_sparse(x, batch_size=args.batch)
        return time.perf_counter() - t0

    def t_matmul():
        t0 = time.perf_counter()
        with torch.inference_mode():
            for lo in range(0, args.tokens, args.batch):
                torch.matmul(x[lo : lo + args.batch], sae.W_enc)
        return time.perf_counter() - t0

    enc = float(np.median([t_encode() for _ in range(args.repeats)]))
    mm = float(np.median([t_matmul() for _ in range(args.repeats)]))
    flops = 2 * args.tokens * args.d_in * args.d_sae
    print(f"TopK encode {args.d_in} -> {args.d_sae}, k={args.k}, fp32 CPU, batch {args.batch}: "
          f"{args.tokens / enc:,.0f} tokens/s ({flops / enc / 1e9:.1f} GFLOP/s)")
    print(f"torch.matmul of the same shapes: {args.tokens / mm:,.0f} tokens/s ({flops / mm / 1e9:.1f} GFLOP/s)")
    print(f"ratio encode / matmul throughput: {mm / enc:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
