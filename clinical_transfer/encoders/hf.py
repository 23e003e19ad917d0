"""transformers backends, loaded from a local path (never downloaded): Gemma audio LLMs and speech encoders.

**Gemma 4 unified** (``gemma4_unified``, the 12B reference model): no audio tower — 16 kHz audio is cut
into 640-sample frames (25 tokens/s) that are projected into the decoder. We capture the residual stream
at audio-token positions only. Convention (also written into every manifest): ``layer = L`` means
``hidden_states[L]`` of the decoder, i.e. the output of ``layers[L-1]`` (``hidden_states[0]`` is the
embedding output). It is captured cheaply: the text config is truncated to L layers before loading (later
layers are never loaded) and the final norm is replaced by identity, which equals
``output_hidden_states=True``'s ``hidden_states[L]`` exactly. Prompt: ``bos, begin-audio, audio x n,
end-audio``; position ids follow the attention mask, so left or right padding gives the same states.

**Speech encoders** (Whisper, wav2vec2, HuBERT, WavLM): ``hidden_states[L]`` of the encoder
(``hidden_states[0]`` = the input embeddings), 50 frames/s; Whisper's padding to 30 s is masked off and
longer audio runs in 30 s windows.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from clinical_transfer.encoders.base import plan_batches
from clinical_transfer.errors import ClinicalTransferError, first_line
from clinical_transfer.hashing import file_digest


def _dir_digest(path: Path, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for f in sorted(path.glob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f.name.encode())
            h.update(bytes.fromhex(file_digest(f)))  # the raw digest, as before (ids stay stable); remembered
    return h.hexdigest()


def _pretrained(what: str, path: Path, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a transformers ``from_pretrained``), its failure turned into one clear error.

    Why: a half-copied model folder (malformed config.json, no weight file, truncated safetensors, shapes
    that do not fit the config) otherwise ends the run with transformers' traceback. Always local: the
    project never downloads (``local_files_only``)."""
    try:
        return fn(*args, local_files_only=True, **kwargs)
    except ClinicalTransferError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, RuntimeError, safetensors errors
        raise ClinicalTransferError(f"cannot load the {what} in {path}: {first_line(exc)}",
                                    "pass a complete folder written by save_pretrained: config.json, the weights "
                                    "(model.safetensors or pytorch_model.bin) and, for a speech encoder, "
                                    "preprocessor_config.json; nothing is downloaded") from exc


def _load(cls, path: Path, device: torch.device, **kwargs):
    """``from_pretrained`` straight onto a CUDA device (no 13 GB detour through host memory), else on CPU."""
    if device.type == "cuda":
        try:
            return cls.from_pretrained(path, device_map=str(device), local_files_only=True, **kwargs)
        except (ImportError, TypeError, ValueError):  # an older transformers / no accelerate: load, then move
            pass
    return _pretrained("model", path, cls.from_pretrained, path, **kwargs)


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ClinicalTransferError(f"{p} is not a local transformers model folder (no config.json)",
                                    "pass --model PATH to a folder saved with save_pretrained (nothing is downloaded)")
    return p


class GemmaAudioEncoder:
    """Residual-stream states at audio-token positions of a Gemma 4 unified audio LLM."""

    name = "gemma"
    sample_rate = 16000
    frames_per_second = 25.0
    layer_convention = ("hidden_states[L] of the decoder = output of layers[L-1] (hidden_states[0] = embeddings), "
                        "before the final norm; audio-token positions only")

    def __init__(self, model: str | Path, layer: int = 24, device: str = "cpu", dtype: str | None = None,
                 batch_size: int = 256, max_tokens: int = 16384, compile: bool = False):
        # start-up time: transformers takes seconds to import; only these backends need it
        from transformers import AutoConfig, Gemma4UnifiedAudioFeatureExtractor, Gemma4UnifiedForConditionalGeneration

        path = _check_path(model)
        config = _pretrained("model config", path, AutoConfig.from_pretrained, path)
        if config.model_type != "gemma4_unified":
            raise ClinicalTransferError(f"{path} is a {config.model_type!r} model, not gemma4_unified",
                                        "use --encoder hf-encoder for Whisper/wav2vec2/HuBERT/WavLM")
        tc = config.text_config
        total = tc.num_hidden_layers
        if not 1 <= layer <= total:
            raise ClinicalTransferError(f"layer {layer} does not exist: the decoder has layers 1..{total}",
                                        f"pass --layer between 1 and {total}")
        shared = getattr(tc, "num_kv_shared_layers", 0) or 0
        tc.num_kv_shared_layers = max(0, shared - (total - layer))  # keep the first KV-shared layer where it was
        tc.num_hidden_layers = layer
        tc.layer_types = list(tc.layer_types[:layer])
        self.layer = layer
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        full = _load(Gemma4UnifiedForConditionalGeneration, path, self.device, config=config, dtype=self.dtype)
        self.model = full.model.to(self.device).eval()
        self.model.language_model.norm = torch.nn.Identity()
        if compile:  # fuses the norms, GELU and RoPE between the GEMMs (compiles once per shape family)
            self.model.language_model = torch.compile(self.model.language_model, dynamic=True)
        self.width = tc.hidden_size
        self.audio_token_id = config.audio_token_id
        self.boa, self.eoa = config.boa_token_id, config.eoa_token_index
        self.bos = getattr(tc, "bos_token_id", None) or 2
        self.pad = getattr(tc, "pad_token_id", None) or 0
        self.features = Gemma4UnifiedAudioFeatureExtractor(feature_size=config.audio_config.audio_embed_dim,
                                                           audio_samples_per_token=config.audio_config.audio_embed_dim)
        self.batch_size = batch_size
        """At most this many clips per forward pass."""
        self.max_tokens = max_tokens
        """About this many (padded) tokens per forward pass: GEMMs large enough to run near the GPU's peak."""
        self.max_padding = 0.1
        """A pass closes before its padding exceeds this fraction of its real tokens."""
        self.samples_per_token = config.audio_config.audio_embed_dim
        self.padding_side = "right"
        self._id = _dir_digest(path, f"gemma:{layer}:{self.dtype}")
        self.model_path = str(path)

    def id(self) -> str:
        return self._id

    def _inputs(self, batch: list[np.ndarray]):
        feats = self.features([np.asarray(y, np.float32) for y in batch], return_tensors="pt")
        n_tokens = feats["input_features_mask"].sum(dim=1).tolist()
        seqs = [[self.bos, self.boa] + [self.audio_token_id] * int(n) + [self.eoa] for n in n_tokens]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if self.padding_side == "left" else slice(0, len(s))
            ids[i, sl] = torch.tensor(s)
            mask[i, sl] = 1
        position_ids = (mask.cumsum(dim=1) - 1).clamp_min(0)
        return ids, mask, position_ids, feats["input_features"], feats["input_features_mask"]

    def _to_device(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        if self.device.type == "cuda":  # pinned host memory: the copy runs asynchronously to the GPU's work
            return t.pin_memory().to(self.device, dtype=dtype, non_blocking=True)
        return t.to(self.device, dtype=dtype)

    @torch.inference_mode()
    def device_hidden_states(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        """Audio-token states per clip, left on the model's device in its dtype (for the on-device SAE).

        Clips are grouped into passes of about ``max_tokens`` tokens with at most ~10% padding
        (:func:`~clinical_transfer.encoders.base.plan_batches`); no KV cache is built.
        """
        lengths = [math.ceil(len(y) / self.samples_per_token) + 3 for y in batch]  # bos, begin-audio, audio x n, end-audio
        states: dict[int, torch.Tensor] = {}
        for idx in plan_batches(lengths, self.max_tokens, self.max_padding, self.batch_size):
            ids, mask, pos, feats, fmask = self._inputs([batch[i] for i in idx])
            ids_d = self._to_device(ids)
            res = self.model(input_ids=ids_d, attention_mask=self._to_device(mask), position_ids=self._to_device(pos),
                             input_features=self._to_device(feats, self.dtype),
                             input_features_mask=self._to_device(fmask), use_cache=False)
            hs = res.last_hidden_state
            # audio positions from the host copy of the ids (one contiguous run per row): slicing with
            # host integers queues no device->host sync, so the next pass is prepared while this one runs
            audio = (ids == self.audio_token_id).numpy()
            for row, i in enumerate(idx):
                where = np.flatnonzero(audio[row])
                lo = int(where[0]) if len(where) else 0
                states[i] = hs[row, lo : lo + len(where)]
        return [states[i] for i in range(len(batch))]

    def hidden_states(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        return [s.float().cpu() for s in self.device_hidden_states(batch)]


class HFSpeechEncoder:
    """Whisper / wav2vec2 / HuBERT / WavLM encoder states at one layer (``hidden_states[L]``)."""

    name = "hf-encoder"
    sample_rate = 16000
    frames_per_second = 50.0
    layer_convention = "hidden_states[L] of the encoder (hidden_states[0] = input embeddings)"

    def __init__(self, model: str | Path, layer: int = 6, device: str = "cpu", dtype: str | None = None,
                 batch_size: int = 8):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel  # start-up time (see above)

        path = _check_path(model)
        config = _pretrained("model config", path, AutoConfig.from_pretrained, path)
        self.kind = config.model_type
        if self.kind not in ("whisper", "wav2vec2", "hubert", "wavlm"):
            raise ClinicalTransferError(f"{path} is a {self.kind!r} model", "use a Whisper, wav2vec2, HuBERT or WavLM model")
        n_layers = config.encoder_layers if self.kind == "whisper" else config.num_hidden_layers
        if not 0 <= layer <= n_layers:
            raise ClinicalTransferError(f"layer {layer} does not exist: hidden_states has 0..{n_layers}",
                                        f"pass --layer between 0 and {n_layers}")
        self.layer = layer
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if dtype else torch.float32
        model = _pretrained("model", path, AutoModel.from_pretrained, path, dtype=self.dtype)
        self.model = (model.get_encoder() if self.kind == "whisper" else model).to(self.device).eval()
        self.features = _pretrained("feature extractor", path, AutoFeatureExtractor.from_pretrained, path)
        self.width = config.d_model if self.kind == "whisper" else config.hidden_size
        self.batch_size = batch_size
        self._id = _dir_digest(path, f"hf:{self.kind}:{layer}:{self.dtype}")
        self.model_path = str(path)

    def id(self) -> str:
        return self._id

    @torch.inference_mode()
    def _whisper(self, y: np.ndarray) -> torch.Tensor:
        window = 30 * self.sample_rate
        parts = []
        for lo in range(0, max(len(y), 1), window):
            seg = y[lo : lo + window]
            feats = self.features(seg, sampling_rate=self.sample_rate, return_tensors="pt")["input_features"]
            hs = self.model(feats.to(self.device, self.dtype), output_hidden_states=True).hidden_states[self.layer]
            real = min(hs.shape[1], math.ceil(len(seg) / (2 * 160)))  # mel hop 160, conv stride 2
            parts.append(hs[0, :real])
        return torch.cat(parts)

    def hidden_states(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        return [s.float().cpu() for s in self.device_hidden_states(batch)]

    @torch.inference_mode()
    def device_hidden_states(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        """States per clip, left on the model's device in its dtype (for the on-device SAE)."""
        if self.kind == "whisper":
            return [self._whisper(np.asarray(y, np.float32)) for y in batch]
        out = []
        for lo in range(0, len(batch), self.batch_size):
            items = [np.asarray(y, np.float32) for y in batch[lo : lo + self.batch_size]]
            enc = self.features(items, sampling_rate=self.sample_rate, return_tensors="pt", padding=True,
                                return_attention_mask=True)
            mask = enc.get("attention_mask")
            kwargs = {"attention_mask": mask.to(self.device)} if mask is not None and getattr(
                self.features, "return_attention_mask", False) else {}
            hs = self.model(enc["input_values"].to(self.device, self.dtype), output_hidden_states=True,
                            **kwargs).hidden_states[self.layer]
            lengths = self.model._get_feat_extract_output_lengths(torch.tensor([len(y) for y in items]))
            out += [hs[i, : int(n)] for i, n in enumerate(lengths)]
        return out
