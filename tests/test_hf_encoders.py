"""transformers backends on tiny random-initialised models built from configs (offline, no download).

These models are test doubles for the *code path*; nothing they produce is a result.
"""

import numpy as np
import pytest
import torch

from clinical_transfer.encoders import get_encoder
from clinical_transfer.errors import ClinicalTransferError
from tests.tiny_models import save_tiny_wav2vec2, save_tiny_whisper


def reference_states(model, y, layer, token=32):
    n = int(np.ceil(len(y) / token))
    feats = torch.from_numpy(np.pad(y, (0, n * token - len(y))).reshape(1, n, token).astype(np.float32))
    ids = torch.tensor([[2, 5] + [7] * n + [6]])
    with torch.no_grad():
        out = model.model(input_ids=ids, input_features=feats, input_features_mask=torch.ones(1, n, dtype=torch.bool),
                          output_hidden_states=True)
    return out.hidden_states[layer][0, 2 : 2 + n]


@pytest.mark.parametrize("layer", [1, 3, 5])
def test_gemma_truncated_capture_equals_output_hidden_states(tiny_gemma, layer):
    path, model = tiny_gemma
    enc = get_encoder("gemma", model=str(path), layer=layer)
    assert len(enc.model.language_model.layers) == layer  # later layers never built or loaded
    y = np.random.default_rng(layer).normal(0, 0.1, 32 * 9 + 5).astype(np.float32)
    got = enc.hidden_states([y])[0]
    assert got.shape == (10, 32)
    torch.testing.assert_close(got, reference_states(model, y, layer), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gemma_audio_positions_with_padding_on_either_side(tiny_gemma, side):
    path, model = tiny_gemma
    enc = get_encoder("gemma", model=str(path), layer=4)
    enc.padding_side = side
    enc.max_padding = 10.0  # one padded pass for both clips (the default plan would run them apart)
    rng = np.random.default_rng(7)
    short, long = rng.normal(0, 0.1, 32 * 3).astype(np.float32), rng.normal(0, 0.1, 32 * 11).astype(np.float32)
    a, b = enc.hidden_states([long, short])
    assert a.shape == (11, 32) and b.shape == (3, 32)
    torch.testing.assert_close(b, reference_states(model, short, 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, reference_states(model, long, 4), atol=1e-5, rtol=1e-5)


def test_gemma_layer_out_of_range(tiny_gemma):
    with pytest.raises(ClinicalTransferError, match="layer 7 does not exist: the decoder has layers 1..6"):
        get_encoder("gemma", model=str(tiny_gemma[0]), layer=7)


def test_whisper_encoder_masks_the_30s_padding(tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperModel

    save_tiny_whisper(tmp_path)
    enc = get_encoder("hf-encoder", model=str(tmp_path), layer=2)
    y = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)  # 3 s
    states = enc.hidden_states([y])[0]
    assert states.shape == (150, 16)  # 50 frames/s of real audio, not 1,500 frames of padding
    model = WhisperModel.from_pretrained(tmp_path).get_encoder().eval()
    feats = WhisperFeatureExtractor(feature_size=80)(y, sampling_rate=16000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        ref = model(feats, output_hidden_states=True).hidden_states[2][0, :150]
    torch.testing.assert_close(states, ref)


def test_wav2vec2_encoder_frames_and_layer(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    save_tiny_wav2vec2(tmp_path)
    enc = get_encoder("hf-encoder", model=str(tmp_path), layer=1)
    y = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    states = enc.hidden_states([y])[0]
    assert states.shape == (49, 16)  # conv strides 5*2^6 = 320 samples: 49 frames in 1 s
    model = Wav2Vec2Model.from_pretrained(tmp_path).eval()
    x = Wav2Vec2FeatureExtractor()(y, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        torch.testing.assert_close(states, model(x, output_hidden_states=True).hidden_states[1][0])


def test_missing_model_folder(tmp_path):
    with pytest.raises(ClinicalTransferError, match="not a local transformers model folder"):
        get_encoder("hf-encoder", model=str(tmp_path), layer=1)
    with pytest.raises(ClinicalTransferError, match="needs a local model folder"):
        get_encoder("gemma")


def test_damaged_model_folders_get_one_clear_error(tmp_path):
    """A half-copied model folder: a reason naming the file's problem, not transformers' traceback."""
    import json
    import shutil

    save_tiny_wav2vec2(tmp_path / "ok")
    cases = {"bad_config": "cannot load the model config in {p}: It looks like the config file at '{p}/config.json' "
                           "is not a valid JSON file.",
             "no_weights": "cannot load the model in {p}: Error no file named model.safetensors, or pytorch_model.bin, "
                           "found in directory {p}.",
             "cut_weights": "cannot load the model in {p}: Error while deserializing header: incomplete metadata, "
                            "file not fully covered.",
             "other_width": "cannot load the model in {p}: You set `ignore_mismatched_sizes` to `False`",
             "no_preprocessor": "cannot load the feature extractor in {p}: Can't load feature extractor for '{p}'."}
    for name in cases:
        shutil.copytree(tmp_path / "ok", tmp_path / name)
    (tmp_path / "bad_config" / "config.json").write_text("{not json")
    (tmp_path / "no_weights" / "model.safetensors").unlink()
    weights = (tmp_path / "cut_weights" / "model.safetensors").read_bytes()
    (tmp_path / "cut_weights" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    cfg = json.loads((tmp_path / "other_width" / "config.json").read_text())
    (tmp_path / "other_width" / "config.json").write_text(json.dumps({**cfg, "hidden_size": 32}))
    (tmp_path / "no_preprocessor" / "preprocessor_config.json").unlink()
    for name, message in cases.items():
        with pytest.raises(ClinicalTransferError) as e:
            get_encoder("hf-encoder", model=str(tmp_path / name), layer=1)
        assert str(e.value).startswith(message.format(p=tmp_path / name)), str(e.value)
        assert "Fix: pass a complete folder written by save_pretrained" in str(e.value)


def test_cli_offers_exactly_the_registered_encoders():
    from clinical_transfer.cli import build_parser
    from clinical_transfer.encoders import encoder_names, register_encoder
    from clinical_transfer.encoders.registry import _REGISTRY, EncoderEntry

    def choices():
        sub = next(a for a in build_parser()._actions if a.dest == "verb")
        return tuple(next(a for a in sub.choices["extract"]._actions if a.dest == "encoder").choices)

    assert choices() == encoder_names() == ("ge2e", "gemma", "hf-encoder")
    register_encoder("tiny", EncoderEntry("tests.tiny_models:Nothing", needs_model=True))
    try:
        assert choices()[-1] == "tiny"  # one registration line is all a new encoder needs
    finally:
        del _REGISTRY["tiny"]


def test_plan_batches_bounds_tokens_and_padding():
    from clinical_transfer.encoders.base import plan_batches

    lengths = [int(v) for v in np.random.default_rng(0).integers(75, 503, size=64)]  # 3-20 s at 25 tokens/s
    plan = plan_batches(lengths, max_tokens=4096, max_padding=0.1)
    assert sorted(i for p in plan for i in p) == list(range(64))  # every clip once
    assert plan == plan_batches(lengths, max_tokens=4096, max_padding=0.1)  # deterministic
    for p in plan:
        longest, real = max(lengths[i] for i in p), sum(lengths[i] for i in p)
        assert len(p) * longest <= 4096
        assert len(p) == 1 or len(p) * longest - real <= 0.1 * real
    padded = sum(len(p) * max(lengths[i] for i in p) for p in plan)
    assert padded / sum(lengths) < 1.1  # vs +74% for 64 clips padded to the longest
    assert plan_batches([10_000, 5], max_tokens=4096) == [[1], [0]]  # an over-long clip runs alone
    assert plan_batches([10] * 5, max_tokens=1000, max_items=2) == [[0, 1], [2, 3], [4]]


def test_gemma_token_budget_batches_equal_per_clip_states(tiny_gemma):
    """Clips grouped into token-budget passes (several passes, with padding) give each clip's own states."""
    path, model = tiny_gemma
    enc = get_encoder("gemma", model=str(path), layer=3)
    enc.max_tokens, enc.max_padding = 40, 0.5
    rng = np.random.default_rng(3)
    clips = [rng.normal(0, 0.1, 32 * n + int(rng.integers(0, 32))).astype(np.float32) for n in (3, 12, 5, 5, 9, 1, 14, 4)]
    from clinical_transfer.encoders.base import plan_batches

    plan = plan_batches([int(np.ceil(len(y) / 32)) + 3 for y in clips], 40, 0.5, enc.batch_size)
    assert len(plan) > 2 and any(len(p) > 1 for p in plan)  # really several passes, some padded
    got = enc.hidden_states(clips)
    for y, g in zip(clips, got):
        torch.testing.assert_close(g, reference_states(model, y, 3), atol=1e-5, rtol=1e-5)  # fp32 on CPU
