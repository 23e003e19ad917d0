"""Command line: ``run-overlay`` (the main job) and ``clinical-transfer <verb>``.

The CLI only parses, loads a config, calls library functions and prints a summary. Every problem a
user can fix ends as one line ``error: ... Fix: ...`` and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.guardrails import BANNER

_REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _guarded(fn):
    """Run a verb; turn user-fixable problems into one line and exit code 2."""

    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return fn(argv)
        except ClinicalTransferError as exc:
            print(f"error: {exc.one_line()}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
            return 130

    return wrapper


# -- verbs ------------------------------------------------------------------------------------------
def _cmd_demo_corpus(args: argparse.Namespace) -> int:
    from dataset_adapters.demo import DemoConfig, write_demo_corpus

    cfg = DemoConfig(n_participants=args.participants, seed=args.seed, layout=args.layout,
                     duration_s=args.duration_s)
    root = write_demo_corpus(args.out, cfg, progress=not args.quiet)
    _say(f"demo corpus ({cfg.n_participants} synthetic participants, layout {cfg.layout}) written to {root}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from dataset_adapters import available_adapters

    for name in available_adapters():
        _say(name)
    return 0


def _cmd_inventory(args: argparse.Namespace) -> int:
    from clinical_transfer.inventory_stage import run_inventory, summary_text

    cfg = _resolve_config(args)
    result = run_inventory(cfg, Path(args.out), progress=not args.quiet)
    _say(BANNER)
    _say(summary_text(result))
    _say(f"inventory written to {args.out}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    import hashlib

    import pandas as pd

    from clinical_transfer.stats import LabelSpec, OverlayConfig, overlay

    feats_path, meta_path = Path(args.features), Path(args.meta)
    for p, flag in ((feats_path, "--features"), (meta_path, "--meta")):
        if not p.is_file():
            raise ClinicalTransferError(f"{flag} file {p} does not exist", f"pass an existing file to {flag}")
    try:
        features = pd.read_parquet(feats_path)
    except Exception as exc:
        raise ClinicalTransferError(f"cannot read {feats_path} as Parquet: {exc}", "write the features with "
                                    "DataFrame.to_parquet (a recording_id column plus one column per feature)") from exc
    meta = pd.read_csv(meta_path, comment="#")

    def split(v):
        return [c.strip() for c in v.split(",") if c.strip()] if v else []

    cfg = OverlayConfig(
        confounds=split(args.confounds), group_col=args.group_col or None, cluster_col=args.cluster or None,
        strata=split(args.strata) if args.strata is not None else None, permutations=args.permutations,
        seed=args.seed, alpha=args.alpha, min_cell=args.min_cell, strict=not args.allow_small_groups,
        positive_controls=split(args.positive_controls),
    )
    result = overlay(features, meta, LabelSpec(args.label, tuple(args.positive or ()), tuple(args.negative or ())),
                     config=cfg)
    result.manifest["inputs_sha256"] = {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in (feats_path, meta_path)}
    result.write(args.out)
    _say(BANNER)
    _say(result.summary())
    _say(f"overlay written to {args.out}")
    return 0


def _cmd_activations(args: argparse.Namespace) -> int:
    from clinical_transfer.activations import dump_activations
    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.inventory_stage import run_inventory

    cfg = _resolve_config(args)
    out = Path(args.out)
    result = run_inventory(cfg, out / "inventory", progress=not args.quiet)
    encoder = get_encoder(args.encoder, model=args.model, layer=args.layer)
    dump_activations(result.recordings, encoder, out, args.heldout_fraction, cfg.seed, progress=not args.quiet)
    _say(f"activations of {encoder.name} layer {encoder.layer} written to {out}")
    return 0


def _cmd_train_sae(args: argparse.Namespace) -> int:
    from clinical_transfer.activations import ActivationDump
    from clinical_transfer.sae.train import TrainConfig, train_topk

    dump = ActivationDump(args.activations)
    cfg = TrainConfig(expansion=args.expansion, k=args.k, batch_size=args.batch_size, steps=args.steps,
                      lr=args.lr, seed=args.seed, val_every=args.val_every)
    heldout = dump.split("heldout") if any(s["split"] == "heldout" for s in dump.manifest["shards"]) else None
    train_topk(dump.split("train"), heldout, args.out, cfg, progress=not args.quiet)
    _say(f"SAE written to {Path(args.out) / 'sae.pt'} (summary.json, train/validation_metrics.jsonl beside it)")
    return 0


def _cmd_eval_sae(args: argparse.Namespace) -> int:
    from clinical_transfer.activations import ActivationDump
    from clinical_transfer.sae.evaluate import evaluate, write_eval
    from clinical_transfer.sae.formats import load_sae

    dump = ActivationDump(args.activations)
    sae = load_sae(args.sae, k=args.k, d_in_expected=int(dump.manifest["width"]))
    summary, density = evaluate(sae, dump.split(args.split).batches(4096))
    path = write_eval(summary, density, args.out, {"sae": str(args.sae), "activations": str(args.activations),
                                                   "split": args.split, "encoder": dump.manifest["encoder"],
                                                   "layer": dump.manifest["layer"]})
    _say(BANNER)
    _say(f"held-out tokens {summary.n_tokens}: FVE {summary.fve:.4f}  normalised L2 {summary.normalized_l2:.4f}  "
         f"L0 {summary.l0:.1f}  dead {summary.dead_fraction:.1%}")
    _say(f"written to {path}")
    return 0


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ClinicalTransferError("--device cuda was asked for but no CUDA device is available", "use --device cpu or auto")
    return name


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ClinicalTransferError(f"--shard {text!r} is not of the form i/N", "write e.g. --shard 0/4") from None
    if not 0 <= i < n:
        raise ClinicalTransferError(f"--shard {text} does not exist", "use 0 <= i < N, e.g. --shard 0/4 ... 3/4")
    return i, n


def _cmd_extract(args: argparse.Namespace) -> int:
    from clinical_transfer.default_sae import load_default_sae
    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.inventory_stage import run_inventory
    from clinical_transfer.sae.formats import load_sae
    from clinical_transfer.scoring import score_recordings

    cfg = _resolve_config(args)
    shard = _parse_shard(args.shard)
    out = Path(args.out)
    encoder = get_encoder(args.encoder, model=args.model, layer=args.layer, device=_resolve_device(args.device))
    if args.sae:
        sae = load_sae(args.sae, k=args.k, d_in_expected=encoder.width)
    elif args.encoder == "ge2e" and args.layer == 3:
        sae = load_default_sae()
    else:
        raise ClinicalTransferError("no SAE given for this encoder/layer", "pass --sae PATH (the embedded default "
                                    "SAE reads GE2E layer 3 only)")
    result = run_inventory(cfg, out / "inventory", progress=not args.quiet)
    cache = Path(args.cache) if args.cache else out.parent / ".score_cache"
    summary = score_recordings(result.recordings, encoder, sae, out, cache, cfg.guardrails.salt, shard,
                               batch=args.batch, progress=not args.quiet, frame_codes=args.frame_codes)
    _say(BANNER)
    _say(summary.text())
    _say(f"score store written to {out} (cache: {cache})")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from clinical_transfer.store import merge_stores

    out = merge_stores(args.shards, args.out)
    _say(f"{len(args.shards)} shard(s) merged into {out}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from clinical_transfer.guardrails import audit_run

    run = Path(args.run_dir)
    if not run.is_dir():
        raise ClinicalTransferError(f"run folder {run} does not exist", "pass the --out folder of a run")
    ids_csv = Path(args.corpus_ids) if args.corpus_ids else None
    if ids_csv is None and (run / "manifest.json").is_file():  # the corpus the run read, if still there
        ds = json.loads((run / "manifest.json").read_text()).get("config", {}).get("dataset", {})
        root = Path(ds.get("metadata_root") or ds.get("data_root") or "")
        ids_csv = root / "combined_data.csv" if (root / "combined_data.csv").is_file() else None
    raw_ids = pd.read_csv(ids_csv, usecols=["id"], dtype=str)["id"].tolist() if ids_csv else []
    problems = audit_run(run, raw_ids, args.min_cell)
    _say(BANNER)
    for p in problems:
        _say(f"VIOLATION {p}")
    checked = f"raw ids from {ids_csv}" if ids_csv else "no raw-id list (pass --corpus-ids)"
    _say(f"audit of {run}: {len(problems)} violation(s); {checked}")
    return 1 if problems else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from clinical_transfer.reporting.inspect import inspect_run

    run = Path(args.run_dir)
    if args.html:
        from clinical_transfer.reporting.render import render_html

        if not (run / "REPORT.md").is_file():
            raise ClinicalTransferError(f"{run} has no REPORT.md", "pass the --out folder of run-overlay")
        path = render_html((run / "REPORT.md").read_text(), run)
        _say(f"HTML report: {path.resolve().as_uri()}")
        return 0
    inspect_run(run, args.label, args.group, args.feature, args.top)
    return 0


def _cmd_freeze(args: argparse.Namespace) -> int:
    from clinical_transfer.reporting.freeze import freeze

    dest = freeze(args.run_dir, Path(args.dest) / args.name)
    _say(f"frozen tables written to {dest}; verify them with: clinical-transfer regenerate {dest}")
    return 0


def _cmd_regenerate(args: argparse.Namespace) -> int:
    from clinical_transfer.reporting.freeze import regenerate

    problems = regenerate(args.frozen, args.work, progress=not args.quiet, salt=args.salt)
    _say(BANNER)
    for p in problems:
        _say(f"DIFFERS {p}")
    _say(f"{args.frozen}: " + ("byte-identical tables regenerated" if not problems else f"{len(problems)} difference(s)"))
    return 1 if problems else 0


def _cmd_build_default_sae(args: argparse.Namespace) -> int:
    from clinical_transfer.default_sae import build_default_sae

    folder = build_default_sae(Path(args.out) if args.out else None, work=Path(args.work), progress=not args.quiet)
    _say(f"default SAE written to {folder}")
    return 0


# -- config resolution ------------------------------------------------------------------------------
def _resolve_config(args: argparse.Namespace):
    from clinical_transfer.config import load_config

    cfg = load_config(args.config)
    if getattr(args, "dataset", None):
        cfg.dataset.name = args.dataset
    if getattr(args, "data_root", None):
        cfg.dataset.data_root = args.data_root
    if getattr(args, "metadata_root", None):
        cfg.dataset.metadata_root = args.metadata_root
    if getattr(args, "only_with_audio", False):
        cfg.dataset.only_with_audio = True
    if getattr(args, "salt", None):
        cfg.guardrails.salt = args.salt
    if not cfg.dataset.data_root:
        from dataset_adapters.coswara import PUBLISHED_AT

        raise ClinicalTransferError(
            "no data root given",
            f"pass --data-root PATH to a Coswara clone ({PUBLISHED_AT}; its date folders hold split parts "
            "YYYYMMDD.tar.gz.aa, .ab, ... which are streamed in order, never extracted) or an extracted copy; "
            "or try everything offline with: run-overlay --demo",
        )
    if not cfg.guardrails.salt:
        raise ClinicalTransferError("no salt for pseudonymous ids", "set [guardrails] salt in the config or pass --salt")
    return cfg


ENCODER_CHOICES = ("ge2e", "gemma", "hf-encoder")  # = encoders.ENCODERS, without importing torch at start-up


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="ge2e", choices=ENCODER_CHOICES)
    p.add_argument("--model", default=None, help="local model folder (gemma, hf-encoder)")
    p.add_argument("--layer", type=int, default=3, help="layer to capture (convention recorded in the manifest)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="adapter name (default from config: coswara)")
    p.add_argument("--data-root", default=None, help="corpus folder (clone with split archives, or extracted)")
    p.add_argument("--metadata-root", default=None, help="folder with combined_data.csv if not the data root")
    p.add_argument("--only-with-audio", action="store_true", help="keep only participants with audio on disk")
    p.add_argument("--config", default=None, help="TOML run config (see configs/)")
    p.add_argument("--salt", default=None, help="salt of the pseudonymous ids (overrides the config)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinical-transfer",
        description=f"What frozen audio models 'hear' in public clinical audio. {BANNER}",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("demo-corpus", help="write the synthetic demo corpus in Coswara's layout")
    p.add_argument("out", help="folder to write")
    p.add_argument("--participants", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration-s", type=float, default=2.5)
    p.add_argument("--layout", choices=["extracted", "split-tar"], default="extracted")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo_corpus)

    p = sub.add_parser("datasets", help="list the corpus adapters")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("inventory", help="account for every recording of a corpus (ok/missing/unreadable/...)")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_inventory)

    p = sub.add_parser("stats", help="confound-controlled correlate overlay of any feature table")
    p.add_argument("--features", required=True, help="Parquet: recording_id + one numeric column per feature")
    p.add_argument("--meta", required=True, help="CSV: recording_id, participant_id, label, confounds, group")
    p.add_argument("--label", required=True, help="label column")
    p.add_argument("--positive", nargs="+", help="label value(s) of the positive side (wildcards allowed)")
    p.add_argument("--negative", nargs="+", help="label value(s) of the negative side")
    p.add_argument("--confounds", default="", help="comma-separated confound columns, e.g. age,sex,wave")
    p.add_argument("--group-col", default="segment_group", help="column whose groups are analysed apart ('' = none)")
    p.add_argument("--cluster", default="participant_id", help="cluster column for robust SEs ('' = classical SEs)")
    p.add_argument("--strata", default=None, help="comma-separated split variables (default: sex,age_band,wave,...)")
    p.add_argument("--positive-controls", default="age,sex", help="labels run the same way as positive controls")
    p.add_argument("--permutations", type=int, default=100, help="stratified permutations for the null (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.05, help="FDR level")
    p.add_argument("--min-cell", type=int, default=10, help="suppress families with fewer participants on a side")
    p.add_argument("--allow-small-groups", action="store_true", help="record unfittable groups as suppressed")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("activations", help="dump frame-level encoder states (for SAE training and evaluation)")
    _add_data_args(p)
    _add_encoder_args(p)
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="share of participants held out")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_activations)

    p = sub.add_parser("extract", help="score every recording: encoder -> SAE -> per-recording aggregates")
    _add_data_args(p)
    _add_encoder_args(p)
    p.add_argument("--sae", default=None, help="SAE checkpoint (default: the embedded default SAE, GE2E layer 3)")
    p.add_argument("--k", type=int, default=None, help="TopK k when the checkpoint does not say")
    p.add_argument("--shard", default="0/1", help="i/N: score only shard i of N (stable hash of recording_id)")
    p.add_argument("--cache", default=None, help="score cache folder (default: OUT/../.score_cache)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch", type=int, default=16, help="recordings per encoder batch")
    p.add_argument("--frame-codes", action="store_true", help="also keep frame-level TopK codes (uint16 ids, float16)")
    p.add_argument("--out", required=True, help="score store folder")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("merge", help="join shard score stores; refuses overlapping or missing shards")
    p.add_argument("shards", nargs="+", help="shard store folders")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("train-sae", help="train a TopK SAE on an activation dump")
    p.add_argument("--activations", required=True, help="activation dump folder")
    p.add_argument("--out", required=True)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--lr", type=float, default=None, help="default 2e-4 / sqrt(d_sae / 16384)")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train_sae)

    p = sub.add_parser("eval-sae", help="held-out FVE, normalised L2, L0, dead fraction of an SAE")
    p.add_argument("--sae", required=True, help="checkpoint file or folder (pt, SAELens, sparsify, dictionary_learning)")
    p.add_argument("--activations", required=True, help="activation dump folder")
    p.add_argument("--split", default="heldout")
    p.add_argument("--k", type=int, default=None, help="TopK k when the checkpoint does not say")
    p.add_argument("--out", required=True, help="writes OUT/test_eval/summary.json")
    p.set_defaults(func=_cmd_eval_sae)

    p = sub.add_parser("inspect", help="terminal view of a run: verdicts, top correlates, one feature's splits")
    p.add_argument("run_dir")
    p.add_argument("--label", default=None)
    p.add_argument("--group", default=None, help="segment group (prompted_speech, vowel, cough, breath)")
    p.add_argument("--feature", default=None, help="e.g. feature_00161: its estimates across confound splits")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--html", action="store_true", help="(re)write report.html and print its address")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("freeze", help="freeze a run's overlay tables under reports/frozen/NAME with a manifest")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True)
    p.add_argument("--dest", default="reports/frozen")
    p.set_defaults(func=_cmd_freeze)

    p = sub.add_parser("regenerate", help="rebuild frozen tables from their inputs and verify them byte for byte")
    p.add_argument("frozen", help="e.g. reports/frozen/demo")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder)")
    p.add_argument("--salt", default=None, help="the run's salt (the demo's public salt is known)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_regenerate)

    p = sub.add_parser("audit", help="re-check a run folder against the guardrails (exit 1 on any violation)")
    p.add_argument("run_dir")
    p.add_argument("--corpus-ids", default=None, help="CSV with an 'id' column of raw corpus ids to look for")
    p.add_argument("--min-cell", type=int, default=10)
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("build-default-sae", help="regenerate the embedded default SAE (demo corpus, GE2E layer 3)")
    p.add_argument("--out", default=None, help="default: the package's own folder")
    p.add_argument("--work", default="runs/default_sae_build", help="scratch folder for corpus and states")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_build_default_sae)
    return parser


@_guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# -- run-overlay ------------------------------------------------------------------------------------
def build_run_overlay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-overlay",
        description=f"The main job: corpus -> inventory -> encoder -> SAE -> correlate overlays. {BANNER}",
    )
    p.add_argument("--demo", action="store_true", help="write the demo corpus and run on the embedded default")
    _add_data_args(p)
    p.add_argument("--out", default="runs/overlay", help="output folder (default runs/overlay)")
    p.add_argument("--encoder", default=None, choices=ENCODER_CHOICES, help="overrides [encoder] name")
    p.add_argument("--model", default=None, help="local model folder (gemma, hf-encoder)")
    p.add_argument("--layer", type=int, default=None, help="layer to capture (convention recorded in the manifests)")
    p.add_argument("--sae", default=None, help="SAE checkpoint (default: the embedded default SAE, GE2E layer 3)")
    p.add_argument("--inventory-only", action="store_true", help="stop after the inventory")
    return p


@_guarded
def run_overlay_main(argv: list[str] | None = None) -> int:
    from clinical_transfer.inventory_stage import run_inventory, summary_text

    args = build_run_overlay_parser().parse_args(argv)
    out = Path(args.out)
    if args.demo:
        from dataset_adapters.demo import DemoConfig, write_demo_corpus

        if args.config is None:
            args.config = str(_REPO_CONFIGS / "demo.toml") if (_REPO_CONFIGS / "demo.toml").is_file() else None
        from clinical_transfer.config import load_config

        demo = load_config(args.config).demo
        corpus = out.with_name(out.name + "_corpus")  # inputs stay outside the output folder (no audio out)
        if not (corpus / "combined_data.csv").is_file():
            write_demo_corpus(corpus, DemoConfig(n_participants=demo.n_participants, seed=demo.seed,
                                                 duration_s=demo.duration_s), progress=not args.quiet)
        args.data_root = str(corpus)
    cfg = _resolve_config(args)
    for flag, key in (("encoder", "name"), ("model", "model"), ("layer", "layer"), ("sae", "sae")):
        if getattr(args, flag, None) is not None:
            setattr(cfg.encoder, key, getattr(args, flag))
    if args.inventory_only:
        result = run_inventory(cfg, out, progress=not args.quiet)
        _say(BANNER)
        _say(summary_text(result))
        _say(f"inventory written to {out}")
        return 0
    from clinical_transfer.pipeline import run_overlay

    demo = None
    if args.demo:
        d = cfg.demo
        demo = {"n_participants": d.n_participants, "seed": d.seed, "duration_s": d.duration_s,
                "salt": cfg.guardrails.salt}  # a synthetic corpus: nothing to protect
    run = run_overlay(cfg, out, progress=not args.quiet, demo=demo,
                      corpus_note="synthetic demo corpus, effects planted on purpose" if args.demo else "public corpus")
    _say(BANNER)
    for label, table in run["overlays"].items():
        target = table[table["role"] == "target"]
        counts = target.groupby("segment_group")["verdict"].agg(
            lambda v: ", ".join(f"{k} {n}" for k, n in v.value_counts().items()))
        _say(f"{label}:")
        for group, text in counts.items():
            _say(f"  {group:16s} {text}")
    _say(f"report: {out / 'REPORT.md'} and {out / 'report.html'}; overlay tables under {out / 'overlays'}")
    _say(f"check it with: clinical-transfer audit {out}")
    return 0
