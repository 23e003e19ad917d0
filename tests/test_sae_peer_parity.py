"""Parity with the peer libraries: SAEs built and saved by sae-lens and eai-sparsify, loaded here.

The peers are test-only extras (``pip install -e '.[peers]'``, done by ``make test``).
"""

import pytest
import torch

from clinical_transfer.sae.formats import load_sae


def randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def dense_from(indices, values, d_sae):
    return torch.zeros(indices.shape[0], d_sae).scatter_add(-1, indices.long(), values.float())


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu"])
def test_saelens_saved_sae_gives_the_same_codes(tmp_path, arch):
    sae_lens = pytest.importorskip("sae_lens")
    cls, cfg_cls = {"topk": ("TopKSAE", "TopKSAEConfig"), "standard": ("StandardSAE", "StandardSAEConfig"),
                    "jumprelu": ("JumpReLUSAE", "JumpReLUSAEConfig")}[arch]
    kwargs = {"k": 6} if arch == "topk" else {}
    peer = getattr(sae_lens, cls)(getattr(sae_lens, cfg_cls)(d_in=24, d_sae=96, **kwargs))
    randomise(peer)
    if arch == "jumprelu":
        with torch.no_grad():
            peer.threshold.uniform_(0.0, 1.0)
    peer.save_model(tmp_path / "sl")
    ours = load_sae(tmp_path / "sl")
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = peer.encode(x)
    mine = ours.encode(x)
    assert torch.equal(mine != 0, theirs != 0)  # exact feature indices
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(ours.decode(mine), peer.decode(theirs), atol=1e-5, rtol=0)


def test_sparsify_saved_sae_gives_the_same_codes(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    peer = sparsify.Sae(24, sparsify.SaeConfig(k=6, num_latents=96))
    randomise(peer, seed=3)
    peer.save_to_disk(tmp_path / "layers.24")
    ours = load_sae(tmp_path / "layers.24")
    assert ours.cfg.k == 6 and ours.cfg.d_sae == 96
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = peer.encode(x)
    codes = ours.encode_sparse(x)
    order = out.top_indices.sort(dim=-1)
    assert torch.equal(codes.indices, order.values.long())  # exact indices
    torch.testing.assert_close(codes.values, out.top_acts.gather(-1, order.indices), atol=1e-6, rtol=0)
