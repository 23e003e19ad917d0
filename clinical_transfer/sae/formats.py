"""Load and save SAE checkpoints in the formats the field uses.

| format | files | keys (shapes) |
|---|---|---|
| plain torch ``.pt`` (the reference atlas) | ``sae_layer_24.pt`` (+ ``summary.json``/``cfg.json``) | ``W_enc``/``encoder.weight``, ``W_dec``/``decoder.weight``, ``b_enc``/``encoder.bias``, ``b_dec``/``pre_bias``; maybe nested under ``state_dict``/``model``/``sae`` |
| SAELens | ``cfg.json`` + ``sae_weights.safetensors`` | ``W_enc`` [d_in,d_sae], ``b_enc``, ``W_dec`` [d_sae,d_in], ``b_dec``, (``threshold``) |
| EleutherAI sparsify | ``cfg.json`` + ``sae.safetensors`` | ``encoder.weight`` [d_sae,d_in], ``encoder.bias``, ``W_dec`` [d_sae,d_in], ``b_dec`` |
| dictionary_learning | ``ae.pt`` + ``config.json`` | ``encoder.weight`` [d_sae,d_in], ``encoder.bias``, ``decoder.weight`` [d_in,d_sae], ``b_dec``, ``k``, ``threshold`` |

Why here: the exact key names of the reference ``.pt`` are not public, so the loader accepts the common
spellings, infers orientation from the shapes, and when it cannot, says which keys and shapes it found
and what it expected — one error, not a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clinical_transfer.errors import ClinicalTransferError, first_line
from clinical_transfer.sae.model import SAEConfig, SparseAutoencoder

_ENC_W = ("W_enc", "encoder.weight", "enc.weight", "W_e")
_DEC_W = ("W_dec", "decoder.weight", "dec.weight", "W_d")
_ENC_B = ("b_enc", "encoder.bias", "enc.bias", "b_e")
_DEC_B = ("b_dec", "pre_bias", "decoder.bias", "b_d", "bias")
_NESTS = ("state_dict", "model", "sae", "model_state", "params")


def _describe(state: dict) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" if hasattr(v, "shape") else f"{k}={v!r}" for k, v in state.items())


def _flatten(obj: dict) -> dict:
    """Unwrap nesting (state_dict/model/sae ...) until tensors appear."""
    for _ in range(4):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        nested = next((obj[k] for k in _NESTS if isinstance(obj.get(k), dict)), None)
        if nested is None:
            return obj
        obj = nested
    return obj


def _pick(state: dict, names: tuple[str, ...]) -> torch.Tensor | None:
    for n in names:
        if n in state and isinstance(state[n], torch.Tensor):
            return state[n]
    for key, v in state.items():  # prefixed keys such as "sae.W_enc"
        if isinstance(v, torch.Tensor) and any(key.endswith("." + n) for n in names):
            return v
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def from_state_dict(
    state: dict,
    k: int | None = None,
    architecture: str | None = None,
    apply_b_dec_to_input: bool = True,
    normalize_input: bool = False,
    d_in_expected: int | None = None,
    source: str = "checkpoint",
) -> SparseAutoencoder:
    """Build an SAE from a state dict of any common spelling, orienting weights by their shapes."""
    state = _flatten(state)
    W_enc, W_dec = _pick(state, _ENC_W), _pick(state, _DEC_W)
    b_enc, b_dec = _pick(state, _ENC_B), _pick(state, _DEC_B)
    expected = (
        "expected encoder weights (W_enc [d_in, d_sae] or encoder.weight [d_sae, d_in]), decoder weights "
        "(W_dec [d_sae, d_in] or decoder.weight [d_in, d_sae]), b_enc [d_sae] and b_dec/pre_bias [d_in]"
    )
    if W_enc is None or W_dec is None or W_enc.ndim != 2 or W_dec.ndim != 2:
        raise ClinicalTransferError(f"{source}: no encoder/decoder weight matrices among keys: {_describe(state)}",
                                    expected)
    d_in = int(b_dec.shape[0]) if b_dec is not None else d_in_expected
    d_sae = int(b_enc.shape[0]) if b_enc is not None else None
    if d_in is None and d_sae is None:
        a, b = W_enc.shape
        d_in, d_sae = (a, b) if a < b else (b, a)  # SAEs expand: the dictionary is the larger side
    elif d_in is None:
        d_in = W_enc.shape[0] if W_enc.shape[1] == d_sae else W_enc.shape[1]
    elif d_sae is None:
        d_sae = W_enc.shape[1] if W_enc.shape[0] == d_in else W_enc.shape[0]
    enc = W_enc if tuple(W_enc.shape) == (d_in, d_sae) else W_enc.T if tuple(W_enc.shape) == (d_sae, d_in) else None
    dec = W_dec if tuple(W_dec.shape) == (d_sae, d_in) else W_dec.T if tuple(W_dec.shape) == (d_in, d_sae) else None
    if enc is None or dec is None:
        raise ClinicalTransferError(
            f"{source}: weight shapes do not fit d_in={d_in}, d_sae={d_sae}; found: {_describe(state)}", expected)
    if d_in_expected is not None and d_in != d_in_expected:
        raise ClinicalTransferError(
            f"{source}: the SAE reads width {d_in} but the encoder gives width {d_in_expected} "
            f"(found: {_describe(state)})",
            "use the SAE trained on this encoder and layer, or pick the encoder/layer the SAE was trained on",
        )
    thr = _pick(state, ("threshold", "log_threshold", "jump_threshold"))
    if k is None and "k" in state:
        k = int(state["k"].item() if isinstance(state["k"], torch.Tensor) else state["k"])
    arch = architecture or ("topk" if k else "jumprelu" if thr is not None and thr.numel() == d_sae else "relu")
    if arch == "topk" and not k:
        raise ClinicalTransferError(
            f"{source}: a TopK SAE needs k, and none was found in the checkpoint or a summary.json/cfg.json beside it",
            "pass --k (the reference atlas SAE uses k=128)",
        )
    sae = SparseAutoencoder(SAEConfig(d_in, d_sae, arch, k, apply_b_dec_to_input, normalize_input),
                            dtype=enc.dtype if enc.is_floating_point() else torch.float32)
    with torch.no_grad():
        sae.W_enc.copy_(enc)
        sae.W_dec.copy_(dec)
        sae.b_enc.copy_(b_enc if b_enc is not None else torch.zeros(d_sae))
        sae.b_dec.copy_(b_dec if b_dec is not None else torch.zeros(d_in))
        if thr is not None:
            sae.threshold.copy_(thr.exp() if _pick(state, ("log_threshold",)) is thr else thr.expand(d_sae))
    return sae


def _read_tensors(file: Path) -> dict:
    """The tensors of a ``.safetensors`` file or a ``torch.save`` state dict, or one clear error.

    Why one reader: a truncated download, an empty file or a pickle holding Python objects must each say
    what is wrong with *this* file, never a deserialiser's traceback. Torch files are read with
    ``weights_only=True`` (no code is ever unpickled), so torch's advice to retry without it is not passed on.
    """
    fix = "re-download or re-export the SAE: a torch.save of its state dict (tensors only) or a .safetensors file"
    if file.stat().st_size == 0:
        raise ClinicalTransferError(f"SAE checkpoint {file} is empty (0 bytes)", fix)
    if file.suffix == ".safetensors":
        try:
            return load_file(file)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a bad header
            raise ClinicalTransferError(f"cannot read {file} as safetensors: {first_line(exc)}", fix) from exc
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and EOF errors alike
        text = str(exc)
        if "Unsupported global" in text:  # a pickle of objects, not of tensors
            what = text[text.index("Unsupported global"):].split(" was not")[0]
            reason = f"it holds Python objects, not only tensors ({what})"
        elif "PytorchStreamReader" in text:
            reason = "its zip archive is damaged (truncated or corrupted)"
        else:  # EOF, an unpickling error, or a key error deep in the unpickler
            reason = f"it is not a torch.save file, or it is truncated ({type(exc).__name__})"
        raise ClinicalTransferError(f"cannot read {file} as a torch checkpoint: {reason}", fix) from exc


def _sidecar_cfg(path: Path) -> dict:
    folder = path if path.is_dir() else path.parent
    cfg = {}
    for name in ("summary.json", "cfg.json", "config.json"):
        cfg.update({k: v for k, v in _read_json(folder / name).items() if k not in cfg})
    return cfg


def _is_saelens(path: Path) -> bool:
    return path.is_dir() and (path / "sae_weights.safetensors").is_file()


def _load_saelens(path: Path, k: int | None, d_in_expected: int | None) -> SparseAutoencoder:
    cfg = _read_json(path / "cfg.json")
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}.get(
        cfg.get("architecture", "standard"), cfg.get("architecture"))
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ClinicalTransferError(f"{path}: normalize_activations={cfg['normalize_activations']!r} is not supported",
                                    "export the SAE with normalize_activations='none' (fold the scaling into the weights)")
    return from_state_dict(_read_tensors(path / "sae_weights.safetensors"), k or cfg.get("k"), arch,
                           cfg.get("apply_b_dec_to_input", True), False, d_in_expected, str(path))


def _is_sparsify(path: Path) -> bool:
    return path.is_dir() and (path / "sae.safetensors").is_file()


def _load_sparsify(path: Path, k: int | None, d_in_expected: int | None) -> SparseAutoencoder:
    cfg = _read_json(path / "cfg.json")
    return from_state_dict(_read_tensors(path / "sae.safetensors"), k or cfg.get("k"), "topk", True, False,
                           d_in_expected, str(path))


def _is_dictionary_learning(path: Path) -> bool:
    return (path.is_dir() and (path / "ae.pt").is_file()) or (path.is_file() and path.name == "ae.pt")


def _load_dictionary_learning(path: Path, k: int | None, d_in_expected: int | None) -> SparseAutoencoder:
    file = path / "ae.pt" if path.is_dir() else path
    cfg = _read_json(file.parent / "config.json").get("trainer", {})
    state = _read_tensors(file)
    cls = str(cfg.get("dict_class", ""))
    arch = "batchtopk" if "BatchTopK" in cls else "topk" if "TopK" in cls or "k" in state else None
    if arch == "batchtopk" and "threshold" in state and state["threshold"].numel() == 1:
        state = {**state, "threshold": state["threshold"].reshape(1)}
    return from_state_dict(state, k or cfg.get("k"), arch, True, False, d_in_expected, str(file))


def _is_plain(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and len(list(path.glob("*.pt"))) == 1)


def _load_plain(path: Path, k: int | None, d_in_expected: int | None) -> SparseAutoencoder:
    """A plain torch ``.pt`` (or ``.safetensors``) state dict in any common spelling."""
    file = path if path.is_file() else sorted(path.glob("*.pt"))[0]
    state = _read_tensors(file)
    if not isinstance(state, dict):
        raise ClinicalTransferError(f"{file} holds a {type(state).__name__}, not a state dict",
                                    "save the SAE with torch.save(model.state_dict(), path)")
    side = _sidecar_cfg(file)
    cfg_in = state.get("cfg") if isinstance(state.get("cfg"), dict) else {}
    top_k = state.get("k")
    top_k = int(top_k.item()) if isinstance(top_k, torch.Tensor) else top_k if isinstance(top_k, int) else None
    k = k or top_k or cfg_in.get("k") or side.get("k") or side.get("topk")
    arch = cfg_in.get("architecture") or side.get("architecture") or "topk"  # the reference atlas is TopK
    return from_state_dict(state, k, arch, cfg_in.get("apply_b_dec_to_input", side.get("apply_b_dec_to_input", True)),
                           cfg_in.get("normalize_input", side.get("normalize_input", False)), d_in_expected,
                           str(file))


@dataclass(frozen=True)
class SAEFormat:
    """One checkpoint format: ``detect(path)`` says whether it is this one, ``load`` reads it."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, int | None, int | None], SparseAutoencoder]


#: Checkpoint formats, tried in order (the most specific first; plain .pt is the fallback).
FORMATS: list[SAEFormat] = [
    SAEFormat("saelens", _is_saelens, _load_saelens),
    SAEFormat("sparsify", _is_sparsify, _load_sparsify),
    SAEFormat("dictionary_learning", _is_dictionary_learning, _load_dictionary_learning),
    SAEFormat("pt", _is_plain, _load_plain),
]


def register_format(fmt: SAEFormat) -> None:
    """Add a checkpoint format ahead of the plain-.pt fallback."""
    FORMATS.insert(len(FORMATS) - 1, fmt)


def detect_format(path: Path) -> SAEFormat:
    """The first registered format whose ``detect`` accepts ``path`` (one-line error otherwise)."""
    if not path.exists():
        raise ClinicalTransferError(f"SAE checkpoint {path} does not exist", "pass an existing file or folder to --sae")
    for fmt in FORMATS:
        if fmt.detect(path):
            return fmt
    raise ClinicalTransferError(
        f"{path} holds no SAE checkpoint I know (looked for sae_weights.safetensors, sae.safetensors, ae.pt, *.pt)",
        "point --sae at the checkpoint file or at a SAELens/sparsify/dictionary_learning folder")


def load_sae(path: str | Path, k: int | None = None, d_in_expected: int | None = None,
             device: str = "cpu") -> SparseAutoencoder:
    """Load an SAE from any registered format (see the module table and :data:`FORMATS`)."""
    path = Path(path)
    return detect_format(path).load(path, k, d_in_expected).to(device)


def save_pt(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Plain torch checkpoint: {"state_dict": W_enc/b_enc/W_dec/b_dec/threshold, "cfg": SAEConfig}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    torch.save({"state_dict": state, "cfg": sae.cfg.to_dict()}, path)
    return path


def save_saelens(sae: SparseAutoencoder, folder: str | Path) -> Path:
    """SAELens layout: cfg.json + sae_weights.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    arch = {"relu": "standard"}.get(c.architecture, c.architecture)
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if c.architecture in ("jumprelu", "batchtopk"):
        tensors["threshold"] = sae.threshold
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, folder / "sae_weights.safetensors")
    cfg = {"architecture": arch, "d_in": c.d_in, "d_sae": c.d_sae, "apply_b_dec_to_input": c.apply_b_dec_to_input,
           "normalize_activations": "none", "dtype": str(sae.W_enc.dtype).replace("torch.", "")}
    if c.k:
        cfg["k"] = c.k
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2))
    return folder
