"""SAE maths, batching, and round trips through every checkpoint format."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.sae import SAEConfig, SparseAutoencoder
from clinical_transfer.sae.formats import load_sae, save_pt, save_saelens


def random_sae(arch="topk", d_in=16, d_sae=64, k=5, seed=0, apply_b_dec=True, normalize=False):
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in, d_sae, arch, k if arch in ("topk", "batchtopk") else None,
                                      apply_b_dec, normalize))
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.normal_()
        sae.threshold.uniform_(0.0, 1.0)
    return sae


def manual_topk(sae, x):
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    vals, idx = torch.relu(pre).topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals)


def test_topk_encode_matches_the_formula_and_sparse_equals_dense():
    sae = random_sae()
    x = torch.randn(50, 16)
    dense = sae.encode(x, batch_size=7)
    assert torch.allclose(dense, manual_topk(sae, x), atol=1e-6)
    codes = sae.encode_sparse(x, batch_size=7)
    assert codes.indices.shape == (50, 5)
    rebuilt = torch.zeros(50, 64).scatter(-1, codes.indices, codes.values)
    assert torch.allclose(rebuilt, dense, atol=1e-6)
    assert torch.allclose(sae.decode_sparse(codes), sae.decode(dense), atol=1e-5)
    assert torch.allclose(sae(x), sae.decode(dense), atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "batchtopk"])
def test_other_architectures(arch):
    sae = random_sae(arch)
    x = torch.randn(20, 16)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    expect = {"relu": torch.relu(pre), "jumprelu": torch.relu(pre) * (pre > sae.threshold),
              "batchtopk": torch.relu(pre) * (torch.relu(pre) > sae.threshold)}[arch]
    assert torch.allclose(sae.encode(x), expect, atol=1e-6)
    codes = sae.encode_sparse(x, batch_size=6)
    assert torch.allclose(torch.zeros(20, 64).scatter_add(-1, codes.indices, codes.values), expect, atol=1e-6)


def test_bf16_and_input_normalisation():
    sae = random_sae(normalize=True)
    x = torch.randn(10, 16) * 5 + 3
    xn = (x - x.mean(-1, keepdim=True)) / ((x - x.mean(-1, keepdim=True)).std(-1, keepdim=True) + 1e-5)
    assert torch.allclose(sae.encode(x), manual_topk(sae, xn), atol=1e-5)
    half = random_sae().to(torch.bfloat16)
    assert half.encode(torch.randn(4, 16)).dtype == torch.bfloat16


@pytest.mark.parametrize("layout", ["nested_state_dict", "torch_linear_names", "pre_bias_top_level"])
def test_plain_pt_spellings_and_orientations(tmp_path, layout):
    sae = random_sae()
    sd = {"W_enc": sae.W_enc.detach(), "b_enc": sae.b_enc.detach(), "W_dec": sae.W_dec.detach(),
          "b_dec": sae.b_dec.detach()}
    if layout == "nested_state_dict":
        obj = {"state_dict": {"sae": sd}, "k": 5}
    elif layout == "torch_linear_names":
        obj = {"model": {"encoder.weight": sd["W_enc"].T, "encoder.bias": sd["b_enc"],
                         "decoder.weight": sd["W_dec"].T, "b_dec": sd["b_dec"]}}
        (tmp_path / "cfg.json").write_text(json.dumps({"k": 5}))
    else:
        obj = {"W_enc": sd["W_enc"], "b_enc": sd["b_enc"], "W_dec": sd["W_dec"], "pre_bias": sd["b_dec"]}
        (tmp_path / "summary.json").write_text(json.dumps({"k": 5, "fve": 0.9}))
    torch.save(obj, tmp_path / "sae_layer_24.pt")
    loaded = load_sae(tmp_path / "sae_layer_24.pt")
    x = torch.randn(30, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_round_trips_pt_and_saelens(tmp_path):
    for arch in ("topk", "jumprelu", "relu"):
        sae = random_sae(arch)
        x = torch.randn(25, 16)
        a = load_sae(save_pt(sae, tmp_path / arch / "sae.pt"))
        b = load_sae(save_saelens(sae, tmp_path / arch / "saelens"))
        for other in (a, b):
            assert other.cfg.architecture == arch
            assert torch.equal(other.encode(x), sae.encode(x))


def test_sparsify_and_dictionary_learning_files_from_their_specs(tmp_path):
    sae = random_sae()
    sp = tmp_path / "layers.24"
    sp.mkdir()
    save_file({"encoder.weight": sae.W_enc.detach().T.contiguous(), "encoder.bias": sae.b_enc.detach(),
               "W_dec": sae.W_dec.detach().contiguous(), "b_dec": sae.b_dec.detach()}, sp / "sae.safetensors")
    (sp / "cfg.json").write_text(json.dumps({"expansion_factor": 4, "num_latents": 64, "k": 5, "d_in": 16}))
    dl = tmp_path / "dl"
    dl.mkdir()
    torch.save({"encoder.weight": sae.W_enc.detach().T, "encoder.bias": sae.b_enc.detach(),
                "decoder.weight": sae.W_dec.detach().T, "b_dec": sae.b_dec.detach(), "k": torch.tensor(5)}, dl / "ae.pt")
    (dl / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoderTopK", "k": 5}}))
    x = torch.randn(25, 16)
    for path in (sp, dl):
        assert torch.equal(load_sae(path).encode(x), sae.encode(x))


def test_checkpoint_errors_name_keys_and_shapes(tmp_path):
    torch.save({"foo": torch.zeros(3, 4), "bar": torch.zeros(4)}, tmp_path / "bad.pt")
    with pytest.raises(ClinicalTransferError) as e:
        load_sae(tmp_path / "bad.pt")
    assert "no encoder/decoder weight matrices among keys: foo (3, 4), bar (4,)" in str(e.value)
    sae = random_sae()
    torch.save({"W_enc": sae.W_enc.detach(), "W_dec": sae.W_dec.detach(), "b_enc": sae.b_enc.detach(),
                "b_dec": sae.b_dec.detach()}, tmp_path / "nok.pt")
    with pytest.raises(ClinicalTransferError, match="a TopK SAE needs k, and none was found"):
        load_sae(tmp_path / "nok.pt")
    with pytest.raises(ClinicalTransferError) as e:
        load_sae(tmp_path / "nok.pt", k=5, d_in_expected=256)
    assert "reads width 16 but the encoder gives width 256" in str(e.value)
    with pytest.raises(ClinicalTransferError, match="does not exist"):
        load_sae(tmp_path / "missing.pt")
    assert np.isfinite(load_sae(tmp_path / "nok.pt", k=5).W_enc.detach().numpy()).all()


class _NotATensor:  # a pickled object: weights_only loading refuses it
    pass


def test_damaged_checkpoints_get_one_clear_error_each(tmp_path):
    """Empty, truncated, non-torch and object-holding files in every format: a reason, never a traceback
    (each of these raised from inside the deserialiser before), and never torch's advice to unpickle code."""
    sae = random_sae()
    good = save_pt(sae, tmp_path / "good.pt").read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint\n")
    (tmp_path / "cut.pt").write_bytes(good[:100])
    torch.save({"W_enc": sae.W_enc.detach(), "extra": _NotATensor()}, tmp_path / "objects.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "ae.pt").write_bytes(b"junk\n")
    (tmp_path / "lens").mkdir()
    (tmp_path / "lens" / "sae_weights.safetensors").write_bytes(b"")
    expected = {
        "empty.pt": "SAE checkpoint {p} is empty (0 bytes)",
        "text.pt": "cannot read {p} as a torch checkpoint: it is not a torch.save file, or it is truncated (UnpicklingError)",
        "cut.pt": "cannot read {p} as a torch checkpoint: its zip archive is damaged (truncated or corrupted)",
        "objects.pt": "cannot read {p} as a torch checkpoint: it holds Python objects, not only tensors "
                      "(Unsupported global: GLOBAL tests.test_sae_model_formats._NotATensor)",
        "bad.safetensors": "cannot read {p} as safetensors: Error while deserializing header: header too small",
        "dl": "cannot read {p}/ae.pt as a torch checkpoint: it is not a torch.save file, or it is truncated",
        "lens": "SAE checkpoint {p}/sae_weights.safetensors is empty (0 bytes)",
    }
    for name, message in expected.items():
        with pytest.raises(ClinicalTransferError) as e:
            load_sae(tmp_path / name)
        assert str(e.value).startswith(message.format(p=tmp_path / name)), str(e.value)
        assert "weights_only" not in str(e.value)
