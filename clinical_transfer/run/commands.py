"""The verbs of the command line as library functions: each resolves its inputs and calls the stages.

Why here and not in ``cli.py``: the CLI only parses arguments and prints; what a verb *does* (which
config, which corpus reader, which SAE, in which order) is orchestration and lives beside
:func:`clinical_transfer.run.overlay.run_overlay`. Heavy modules (torch, matplotlib, statsmodels) are
imported inside the verbs that need them, so ``clinical-transfer --help`` starts in well under a second.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.guardrails import audit_run, check_salt
from clinical_transfer.hashing import sha256_file
from clinical_transfer.reporting.freeze import freeze as freeze_tables
from clinical_transfer.run.config import CONFIG_DIR, RunConfig, default_config_path, load_config
from clinical_transfer.run.inventory import InventoryResult, run_inventory
from clinical_transfer.store import merge_stores
from dataset_adapters import adapter_entry, available_adapters, get_adapter
from dataset_adapters.coswara import PUBLISHED_AT
from dataset_adapters.demo import DemoConfig, demo_generator_digest, write_demo_corpus

#: Environment variable read for the salt when no --salt/--salt-file is given (keeps it out of shell history).
SALT_ENV = "CLINICAL_TRANSFER_SALT"


@dataclass
class DataOptions:
    """Where the corpus is and how to read it (the ``--dataset/--data-root/...`` flags)."""

    dataset: str | None = None
    data_root: str | None = None
    metadata_root: str | None = None
    only_with_audio: bool = False
    config: str | None = None
    salt: str | None = None


def resolve_config(opts: DataOptions) -> tuple[RunConfig, str]:
    """Config file (given, else the corpus adapter's default, else built-in defaults) + flag overrides.

    Returns the config and a description of where it came from (written into reports and manifests).
    """
    path = Path(opts.config) if opts.config else (default_config_path(opts.dataset) if opts.dataset else None)
    cfg = load_config(path)
    source = str(path) if path else "built-in defaults"
    if opts.dataset:
        adapter_entry(opts.dataset)  # one-line error for an unknown corpus
        cfg.dataset.name = opts.dataset
    for key in ("data_root", "metadata_root", "salt"):
        value = getattr(opts, key)
        if value:
            setattr(cfg.guardrails if key == "salt" else cfg.dataset, key, value)
    if opts.only_with_audio:
        cfg.dataset.only_with_audio = True
    if not cfg.dataset.data_root:
        raise ClinicalTransferError(
            "no data root given",
            f"pass --data-root PATH to a Coswara clone ({PUBLISHED_AT}; its date folders hold split parts "
            "YYYYMMDD.tar.gz.aa, .ab, ... which are streamed in order, never extracted) or an extracted copy; "
            "or try everything offline with: run-overlay --demo",
        )
    check_salt(cfg.guardrails.salt)
    return cfg, source


def read_salt(salt: str | None, salt_file: str | None) -> str | None:
    """``--salt``, else the first line of ``--salt-file``, else ``$CLINICAL_TRANSFER_SALT`` (None: the config's)."""
    if salt:
        return salt
    if salt_file:
        try:
            text = Path(salt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ClinicalTransferError(f"cannot read --salt-file {salt_file}: {exc}",
                                        "give a text file whose first line is the salt") from None
        if not text:
            raise ClinicalTransferError(f"--salt-file {salt_file} is empty", "write the salt on its first line")
        return text.splitlines()[0].strip()
    return os.environ.get(SALT_ENV) or None


def parse_shard(text: str) -> tuple[int, int]:
    """``i/N`` -> (i, N), with a one-line error for anything else."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ClinicalTransferError(f"--shard {text!r} is not of the form i/N", "write e.g. --shard 0/4") from None
    if not 0 <= i < n:
        raise ClinicalTransferError(f"--shard {text} does not exist", "use 0 <= i < N, e.g. --shard 0/4 ... 3/4")
    return i, n


def prepare_demo(opts: DataOptions, out: Path, progress: bool) -> DataOptions:
    """Write the demo corpus beside ``out`` (inputs never go into an output folder) and point at it."""
    if opts.config is None and (CONFIG_DIR / "demo.toml").is_file():
        opts.config = str(CONFIG_DIR / "demo.toml")
    demo = load_config(opts.config).demo
    corpus = out.with_name(out.name + "_corpus")
    spec = json.dumps({**asdict(demo), "generator": demo_generator_digest()}, sort_keys=True)
    stamp = corpus / "demo_spec.json"  # a corpus left by another spec is rebuilt, never silently reused
    if not (corpus / "combined_data.csv").is_file() or not stamp.is_file() or stamp.read_text() != spec:
        if corpus.is_dir():
            shutil.rmtree(corpus)
        write_demo_corpus(corpus, demo, progress=progress)
        stamp.write_text(spec)
    opts.data_root = str(corpus)
    return opts


def demo_corpus(out: str, participants: int, seed: int, layout: str, duration_s: float,
                progress: bool, site: str = "a") -> tuple[Path, DemoConfig]:
    """Site ``a``: the demo corpus (Coswara layout); site ``b``: the replication corpus (CSV manifest)."""
    if site == "b":
        from dataset_adapters.demo import write_site_b_corpus

        cfg = DemoConfig(n_participants=participants, seed=seed, layout="manifest", duration_s=duration_s, faults=False)
        return write_site_b_corpus(out, cfg, progress=progress), cfg
    cfg = DemoConfig(n_participants=participants, seed=seed, layout=layout, duration_s=duration_s)
    return write_demo_corpus(out, cfg, progress=progress), cfg


def replicate(opts: DataOptions, out: Path, frozen: str, label: str, column: str | None, positive: list[str],
              negative: list[str], group_map: dict[str, str], verdicts: list[str], draws: int, model: str | None,
              sae: str | None, device: str, progress: bool):
    """Replicate a frozen overlay's correlates in the corpus of ``opts`` (see :mod:`clinical_transfer.run.replicate`)."""
    from clinical_transfer.run.replicate import DEFAULT_VERDICTS, ReplicationSpec
    from clinical_transfer.run.replicate import replicate as run_replication  # start-up time: torch

    cfg, _ = resolve_config(opts)
    spec = ReplicationSpec(Path(frozen), label, column or "", positive, negative, None, group_map,
                           tuple(verdicts) or DEFAULT_VERDICTS, draws, model, sae, device)
    return run_replication(cfg, spec, out, progress=progress)


def datasets() -> list[str]:
    """One line per registered corpus: name, licence, citation."""
    lines = []
    for name in available_adapters():
        e = adapter_entry(name)
        lines.append(f"{name}\t{e.licence or 'licence: see the corpus'}\t{e.citation}")
    return lines


def inventory(opts: DataOptions, out: Path, progress: bool) -> InventoryResult:
    cfg, _ = resolve_config(opts)
    return run_inventory(cfg, out, progress=progress)


def overlay_run(opts: DataOptions, out: Path, progress: bool, demo: bool = False,
                encoder: dict | None = None, sae_fit: dict | None = None, analysis: dict | None = None,
                engine: str = "local", ray_options=None):
    """``run-overlay``: resolve the config (and demo corpus), apply encoder overrides, run the job."""
    from clinical_transfer.run.overlay import demo_spec, run_overlay  # start-up time: stats, plots, torch

    if demo:
        prepare_demo(opts, out, progress)
    cfg, source = resolve_config(opts)
    for section, overrides in ((cfg.encoder, encoder), (cfg.sae_fit, sae_fit), (cfg.analysis, analysis)):
        for key, value in (overrides or {}).items():
            if value is not None:
                setattr(section, key, value)
    return run_overlay(cfg, out, progress=progress, demo=demo_spec(cfg) if demo else None, config_source=source,
                       corpus_note="synthetic demo corpus, effects planted on purpose" if demo else "public corpus",
                       engine=engine, ray_options=ray_options)


def extract(opts: DataOptions, out: Path, encoder: str, model: str | None, layer: int, sae: str | None,
            k: int | None, device: str, shard: tuple[int, int], cache: str | None, batch: int,
            frame_codes: bool, progress: bool, sae_precision: str = "fp32", compile: bool = False,
            engine: str = "local", ray_options=None):
    """Score every recording into a (shard) score store; the same stages as ``run-overlay`` up to scores."""
    from clinical_transfer.run.models import resolve_models  # start-up time: torch
    from clinical_transfer.run.ray_engine import score_corpus  # start-up time: torch (Ray only when asked)
    from clinical_transfer.scoring import check_sae_precision

    cfg, _ = resolve_config(opts)
    models = resolve_models(encoder, layer, model, sae, device, k=k, compile=compile)
    check_sae_precision(models.encoder, sae_precision)  # before the inventory, not after it
    inv = run_inventory(cfg, out / "inventory", progress=progress)
    cache_dir = Path(cache) if cache else out.parent / ".score_cache"
    if engine == "ray" and compile:
        raise ClinicalTransferError("--engine ray loads the encoder in each actor without --compile (for now)",
                                    "drop --compile, or use --engine local")
    summary = score_corpus(inv.recordings, models, out, cache_dir, cfg.guardrails.salt, inv.adapter.read_sources,
                           engine, ray_options, shard, batch, frame_codes, progress, sae_precision)
    return summary, cache_dir


def activations(opts: DataOptions, out: Path, encoder: str, model: str | None, layer: int,
                heldout_fraction: float, progress: bool, device: str = "cpu"):
    from clinical_transfer.activations import dump_activations  # start-up time: torch
    from clinical_transfer.run.models import resolve_device, resolve_models

    cfg, _ = resolve_config(opts)
    device = resolve_device(device)  # before the inventory: a missing GPU is known at once
    inv = run_inventory(cfg, out / "inventory", progress=progress)
    enc = resolve_models(encoder, layer, model, device=device, need_sae=False).encoder
    dump_activations(inv.recordings, enc, out, heldout_fraction, cfg.seed, progress=progress,
                     reader=inv.adapter.read_sources)
    return enc


def train_sae(activations_dir: str, out: str, train_cfg, progress: bool) -> Path:
    from clinical_transfer.activations import ActivationDump  # start-up time: torch
    from clinical_transfer.sae.train import train_topk

    dump = ActivationDump(activations_dir)
    heldout = dump.split("heldout") if any(split == "heldout" for _, split in dump.shards) else None
    train_topk(dump.split("train"), heldout, out, train_cfg, progress=progress)
    return Path(out) / "sae.pt"


def eval_sae(sae_path: str, activations_dir: str, split: str, k: int | None, out: str):
    from clinical_transfer.activations import ActivationDump  # start-up time: torch
    from clinical_transfer.sae.evaluate import evaluate, write_eval
    from clinical_transfer.sae.formats import load_sae

    dump = ActivationDump(activations_dir)
    sae = load_sae(sae_path, k=k, d_in_expected=int(dump.manifest["width"]))
    summary, density = evaluate(sae, dump.split(split).batches(4096))
    path = write_eval(summary, density, out, {"sae": str(sae_path), "activations": str(activations_dir),
                                              "split": split, "encoder": dump.manifest["encoder"],
                                              "layer": dump.manifest["layer"]})
    return summary, path


def stats_overlay(features_path: Path, meta_path: Path, spec, cfg):
    """``clinical-transfer stats``: the overlay of any feature table, with the input files' hashes."""
    from clinical_transfer.stats import overlay  # start-up time: statsmodels, scipy, numba

    for p, flag in ((features_path, "--features"), (meta_path, "--meta")):
        if not p.is_file():
            raise ClinicalTransferError(f"{flag} file {p} does not exist", f"pass an existing file to {flag}")
    try:
        features = pd.read_parquet(features_path)
    except Exception as exc:
        raise ClinicalTransferError(f"cannot read {features_path} as Parquet: {exc}", "write the features with "
                                    "DataFrame.to_parquet (a recording_id column plus one column per feature)") from exc
    result = overlay(features, pd.read_csv(meta_path, comment="#"), spec, config=cfg)
    result.manifest["inputs_sha256"] = {str(p): sha256_file(p) for p in (features_path, meta_path)}
    return result


def merge(shards: list[str], out: str) -> Path:
    return merge_stores(shards, out)


def _corpus_ids(run: Path) -> tuple[list[str], str]:
    """Raw participant ids of the corpus a run read (from its manifest), to look for in the outputs."""
    if not (run / "manifest.json").is_file():
        return [], ""
    try:
        ds = json.loads((run / "manifest.json").read_text()).get("config", {}).get("dataset", {})
    except (OSError, ValueError, AttributeError):  # a damaged manifest: the audit itself reports the file
        return [], ""
    root = ds.get("data_root") or ""
    if not root or not Path(root).is_dir():
        return [], ""
    try:
        options = {"metadata_root": ds["metadata_root"]} if ds.get("metadata_root") else {}
        ids = get_adapter(ds.get("name", "coswara"), root, **options).metadata()["participant_id"].tolist()
    except ClinicalTransferError:
        return [], ""
    return ids, f"the {ds.get('name')} metadata under {ds.get('metadata_root') or root}"


def audit(run_dir: str, corpus_ids: str | None, min_cell: int) -> tuple[list[str], str]:
    """Re-check a run folder against the guardrails; returns (violations, which raw ids were looked for)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ClinicalTransferError(f"run folder {run} does not exist", "pass the --out folder of a run")
    if corpus_ids:
        raw_ids, where = pd.read_csv(corpus_ids, usecols=["id"], dtype=str)["id"].tolist(), str(corpus_ids)
    else:
        raw_ids, where = _corpus_ids(run)
    checked = f"raw ids from {where}" if raw_ids else "no raw-id list (pass --corpus-ids)"
    return audit_run(run, raw_ids, min_cell), checked


def inspect(run_dir: str, label: str | None, group: str | None, feature: str | None, top: int, html: bool) -> Path | None:
    from clinical_transfer.reporting.inspect import inspect_run  # start-up time: rich, pandas
    from clinical_transfer.reporting.render import render_html

    run = Path(run_dir)
    if html:
        if not (run / "REPORT.md").is_file():
            raise ClinicalTransferError(f"{run} has no REPORT.md", "pass the --out folder of run-overlay")
        return render_html((run / "REPORT.md").read_text(), run)
    inspect_run(run, label, group, feature, top)
    return None


def freeze(run_dir: str, dest: Path) -> Path:
    return freeze_tables(run_dir, dest)


def regenerate(frozen: str, work: str | None, progress: bool, salt: str | None) -> list[str]:
    from clinical_transfer.run.regenerate import regenerate as rebuild  # start-up time: the whole pipeline

    return rebuild(frozen, work, progress=progress, salt=salt)


def build_default_sae(out: str | None, work: str, progress: bool) -> Path:
    from clinical_transfer.run.default_sae import build_default_sae as build  # start-up time: torch

    return build(Path(out) if out else None, work=Path(work), progress=progress)
