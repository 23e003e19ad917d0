"""Command line: ``run-overlay`` (the main job) and ``clinical-transfer <verb>``.

The CLI only parses arguments, calls :mod:`clinical_transfer.run` and prints. Every problem a user can
fix ends as one line ``error: ... Fix: ...`` and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from clinical_transfer.encoders.registry import encoder_names
from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.guardrails import BANNER, DEFAULT_MIN_CELL
from clinical_transfer.run import commands as run
from clinical_transfer.run.commands import DataOptions
from clinical_transfer.run.inventory import summary_text


def _say(*lines: str) -> None:
    print("\n".join(lines), flush=True)


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


def _data(args: argparse.Namespace) -> DataOptions:
    return DataOptions(args.dataset, args.data_root, args.metadata_root, args.only_with_audio, args.config,
                       run.read_salt(args.salt, args.salt_file))


def _split(v: str | None) -> list[str]:
    return [c.strip() for c in v.split(",") if c.strip()] if v else []


# -- verbs ------------------------------------------------------------------------------------------
def _cmd_demo_corpus(a):
    if a.site == "b":  # the replication corpus: other people, CSV-manifest layout
        seed = a.seed if a.seed != 0 else 1
        n = a.participants if a.participants != 160 else 100
        root, cfg = run.demo_corpus(a.out, n, seed, a.layout, a.duration_s, progress=not a.quiet, site="b")
        _say(f"site-B replication corpus ({cfg.n_participants} synthetic participants, CSV manifest) written to {root}; "
             f"read it with --dataset manifest --data-root {root}")
        return
    root, cfg = run.demo_corpus(a.out, a.participants, a.seed, a.layout, a.duration_s, progress=not a.quiet)
    _say(f"demo corpus ({cfg.n_participants} synthetic participants, layout {cfg.layout}) written to {root}")


def _cmd_replicate(a):
    group_map = {}
    for pair in _split(a.group_map):
        if "=" not in pair:
            raise ClinicalTransferError(f"--group-map entry {pair!r} is not ORIGINAL=HERE", "e.g. --group-map vowel=vowel")
        k, v = pair.split("=", 1)
        group_map[k.strip()] = v.strip()
    verdicts = [v.strip() for v in a.verdicts.split(",")] if a.verdicts else []
    result = run.replicate(_data(a), _out(a), a.frozen, a.label, a.column, _split(a.positive), _split(a.negative),
                           group_map, verdicts, a.draws, a.model, a.sae, a.device, not a.quiet)
    _say(BANNER, result.text, f"replication written to {a.out}")


def _cmd_datasets(a):
    _say("\n".join(run.datasets()))


def _print_inventory(result, out) -> None:
    _say(BANNER, summary_text(result), f"inventory written to {out}")


def _cmd_inventory(a):
    _print_inventory(run.inventory(_data(a), _out(a), progress=not a.quiet), a.out)


def _cmd_stats(a):
    from clinical_transfer.stats import LabelSpec, OverlayConfig  # start-up time: statsmodels

    cfg = OverlayConfig(
        confounds=_split(a.confounds), group_col=a.group_col or None, cluster_col=a.cluster or None,
        strata=_split(a.strata) if a.strata is not None else None, permutations=a.permutations,
        seed=a.seed, alpha=a.alpha, min_cell=a.min_cell, min_stratum=a.min_stratum, strict=not a.allow_small_groups,
        positive_controls=_split(a.positive_controls))
    spec = LabelSpec(a.label, tuple(a.positive or ()), tuple(a.negative or ()))
    result = run.stats_overlay(Path(a.features), Path(a.meta), spec, cfg)
    result.write(a.out)
    _say(BANNER, result.summary(), f"overlay written to {a.out}")


def _cmd_activations(a):
    from clinical_transfer.activations import PROGRESS

    if (Path(a.out) / PROGRESS).is_file() and not a.overwrite:
        _say(f"resuming the unfinished dump in {a.out} (pass --overwrite to start it over)")
    else:
        _out(a)
    enc = run.activations(_data(a), Path(a.out), a.encoder, a.model, a.layer, a.heldout_fraction, not a.quiet,
                          a.device)
    _say(f"activations of {enc.name} layer {enc.layer} written to {a.out}")


def _cmd_train_sae(a):
    from clinical_transfer.sae.train import TrainConfig  # start-up time: torch

    cfg = TrainConfig(expansion=a.expansion, k=a.k, batch_size=a.batch_size, steps=a.steps, lr=a.lr, seed=a.seed,
                      val_every=a.val_every)
    path = run.train_sae(a.activations, a.out, cfg, progress=not a.quiet)
    _say(f"SAE written to {path} (summary.json, train/validation_metrics.jsonl beside it)")


def _cmd_eval_sae(a):
    s, path = run.eval_sae(a.sae, a.activations, a.split, a.k, a.out)
    _say(BANNER, f"held-out tokens {s.n_tokens}: FVE {s.fve:.4f}  normalised L2 {s.normalized_l2:.4f}  "
         f"L0 {s.l0:.1f}  dead {s.dead_fraction:.1%}", f"written to {path}")


def _cmd_extract(a):
    summary, cache = run.extract(_data(a), _out(a), a.encoder, a.model, a.layer, a.sae, a.k, a.device,
                                 run.parse_shard(a.shard), a.cache, a.batch, a.frame_codes, not a.quiet, a.sae_precision,
                                 a.compile, a.engine, _ray_options(a))
    _say(BANNER, summary.text(), f"score store written to {a.out} (cache: {cache})")


def _cmd_merge(a):
    _say(f"{len(a.shards)} shard(s) merged into {run.merge(a.shards, a.out)}")


def _cmd_audit(a):
    problems, checked = run.audit(a.run_dir, a.corpus_ids, a.min_cell)
    _say(BANNER, *(f"VIOLATION {p}" for p in problems), f"audit of {a.run_dir}: {len(problems)} violation(s); {checked}")
    return 1 if problems else 0


def _cmd_inspect(a):
    path = run.inspect(a.run_dir, a.label, a.group, a.feature, a.top, a.html)
    if path is not None:
        _say(f"HTML report: {path.resolve().as_uri()}")


def _cmd_freeze(a):
    dest = run.freeze(a.run_dir, Path(a.dest) / a.name)
    _say(f"frozen tables written to {dest}; verify them with: clinical-transfer regenerate {dest}")


def _cmd_regenerate(a):
    problems = run.regenerate(a.frozen, a.work, progress=not a.quiet, salt=a.salt)
    _say(BANNER, *(f"DIFFERS {p}" for p in problems), f"{a.frozen}: " + ("byte-identical tables regenerated" if not problems else f"{len(problems)} difference(s)"))
    return 1 if problems else 0


def _cmd_build_default_sae(a):
    _say(f"default SAE written to {run.build_default_sae(a.out, a.work, not a.quiet)}")


# -- parsers ----------------------------------------------------------------------------------------
def _number(kind: type, low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """An argparse ``type``: a number of ``kind`` in [low, high] (``*_open``: excluded). Why: a negative batch,
    participant count or fraction above 1 otherwise runs (and writes results) or fails deep inside."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if v < low or (low_open and v == low) or (high is not None and (v > high or (high_open and v == high))):
            lo, hi = ("(" if low_open else "[") + f"{low:g}", (f"{high:g}" if high is not None else "inf") + (
                ")" if high_open or high is None else "]")
            raise argparse.ArgumentTypeError(f"{text} is outside {lo}, {hi}")
        return v
    return parse


COUNT = _number(int, 1)
"""A count of at least one (participants, batch, draws, top rows, seeds, k, ...)."""
NON_NEGATIVE = _number(int, 0)
"""A seed, a layer (0 = embeddings for speech encoders), a count that may be zero (permutations, K)."""
MIN_CELL = _number(int, DEFAULT_MIN_CELL)
"""The small-cell threshold: never below the guardrail's 10 (a run config is held to the same floor)."""
POSITIVE = _number(float, 0, low_open=True)


def _device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (one GPU of several)."""
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")


def _add_encoder_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    # extract/activations need frame states; run-overlay also takes descriptor sets (egemaps)
    p.add_argument("--encoder", default="ge2e" if defaults else None, choices=encoder_names(descriptors=not defaults),
                   help="frozen encoder (registry: clinical_transfer.encoders.registry)")
    p.add_argument("--model", default=None, help="local model folder (gemma, hf-encoder)")
    p.add_argument("--layer", type=NON_NEGATIVE, default=3 if defaults else None,
                   help="layer to capture (convention recorded in the manifest)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="adapter name; without --config its default config is used")
    p.add_argument("--data-root", default=None, help="corpus folder (clone with split archives, or extracted)")
    p.add_argument("--metadata-root", default=None, help="folder with combined_data.csv if not the data root")
    p.add_argument("--only-with-audio", action="store_true", help="keep only participants with audio on disk")
    p.add_argument("--config", default=None, help="TOML run config (see configs/)")
    p.add_argument("--salt", default=None, help="salt of the pseudonymous ids (overrides the config; 16+ characters)")
    p.add_argument("--salt-file", default=None, help="read the salt from the first line of this file instead "
                   "(or set CLINICAL_TRANSFER_SALT): keeps it out of shell history")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="clear a non-empty output folder of an earlier run first (refused otherwise)")


def _out(args: argparse.Namespace) -> Path:
    """The checked (fresh, writable) output folder: before any work, not after the inventory."""
    from clinical_transfer.run.outdir import prepare_output

    return prepare_output(args.out, args.overwrite, (args.data_root, args.metadata_root))


def _verb(sub, name: str, func, help_: str, data: bool = False, encoder: bool = False, quiet: bool = False):
    p = sub.add_parser(name, help=help_)
    if data:
        _add_data_args(p)
    if encoder:
        _add_encoder_args(p)
    if quiet:
        p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinical-transfer",
                                     description=f"What frozen audio models 'hear' in public clinical audio. {BANNER}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = sub.add_parser("run-overlay", add_help=False, help="the main job: corpus -> inventory -> encoder -> SAE -> "
                       "correlate overlays (the same as the run-overlay command; run-overlay --help)")
    p.set_defaults(func=lambda a: run_overlay_main([]))  # listed for --help; main() hands the arguments over
    p = _verb(sub, "demo-corpus", _cmd_demo_corpus, "write the synthetic demo corpus in Coswara's layout", quiet=True)
    p.add_argument("out", help="folder to write")
    p.add_argument("--participants", type=COUNT, default=160)
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--duration-s", type=_number(float, 0.5), default=2.5,
                   help="seconds per recording (at least 0.5: shorter ones fail the inventory's minimum)")
    p.add_argument("--layout", choices=["extracted", "split-tar"], default="extracted")
    p.add_argument("--site", choices=["a", "b"], default="a",
                   help="a: the demo corpus (Coswara layout); b: the replication corpus (CSV manifest, other people, "
                        "asthma unconfounded; default 100 participants, seed 1)")
    _verb(sub, "datasets", _cmd_datasets, "list the corpus adapters (name, licence, citation)")
    p = _verb(sub, "inventory", _cmd_inventory, "account for every recording (ok/missing/unreadable/...)", data=True)
    p.add_argument("--out", required=True, help="output folder")

    p = _verb(sub, "stats", _cmd_stats, "confound-controlled correlate overlay of any feature table")
    p.add_argument("--features", required=True, help="Parquet: recording_id + one numeric column per feature")
    p.add_argument("--meta", required=True, help="CSV: recording_id, participant_id, label, confounds, group")
    p.add_argument("--label", required=True, help="label column")
    p.add_argument("--positive", nargs="+", help="label value(s) of the positive side (wildcards allowed)")
    p.add_argument("--negative", nargs="+", help="label value(s) of the negative side")
    p.add_argument("--confounds", default="", help="comma-separated confound columns, e.g. age,sex,wave")
    p.add_argument("--group-col", default="segment_group", help="column whose groups are analysed apart ('' = none)")
    p.add_argument("--cluster", default="participant_id", help="cluster column for robust SEs ('' = classical SEs)")
    p.add_argument("--strata", default=None, help="comma-separated split variables (default: sex,age_band,wave,quality)")
    p.add_argument("--positive-controls", default="age,sex", help="labels run the same way as positive controls")
    for flag, kind, default, help_ in (
            ("--permutations", NON_NEGATIVE, 1000, "Freedman-Lane permutations for the family-wise p (0 = none)"),
            ("--seed", NON_NEGATIVE, 0, ""), ("--alpha", _number(float, 0, 0.5, low_open=True), 0.05, "FDR level, in (0, 0.5] as in a run config"),
            ("--min-cell", MIN_CELL, 10, "suppress families with fewer participants (10 or more: GUARDRAILS)"),
            ("--min-stratum", MIN_CELL, 20, "participants a side for a confound stratum to be estimated")):
        p.add_argument(flag, type=kind, default=default, help=help_ or None)
    p.add_argument("--allow-small-groups", action="store_true", help="record unfittable groups as suppressed")
    p.add_argument("--out", required=True, help="output folder")

    p = _verb(sub, "activations", _cmd_activations, "dump frame-level encoder states (SAE training and evaluation)",
              data=True, encoder=True)
    p.add_argument("--heldout-fraction", type=_number(float, 0, 1, high_open=True), default=0.2,
                   help="share of participants held out")
    p.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", required=True)

    p = _verb(sub, "extract", _cmd_extract, "score every recording: encoder -> SAE -> per-recording aggregates",
              data=True, encoder=True)
    p.add_argument("--sae", default=None, help="SAE checkpoint (default: the embedded default SAE, GE2E layer 3)")
    p.add_argument("--k", type=COUNT, default=None, help="TopK k when the checkpoint does not say")
    p.add_argument("--shard", default="0/1", help="i/N: score only shard i of N (stable hash of recording_id)")
    p.add_argument("--cache", default=None, help="score cache folder (default: OUT/../.score_cache)")
    p.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch", type=COUNT, default=16, help="recordings per encoder batch")
    p.add_argument("--frame-codes", action="store_true", help="also keep frame-level TopK codes (uint16 ids, float16)")
    p.add_argument("--sae-precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                   help="SAE matmul precision on a GPU encoder's device (fp32 = reference codes; tf32 ~4.6x, bf16 ~9x faster "
                        "on an H200; part of the cache key)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the gemma decoder: ~1.5x faster capture on an H200 after a ~90 s first call")
    p.add_argument("--out", required=True, help="score store folder")
    _add_engine_args(p)

    p = _verb(sub, "replicate", _cmd_replicate, "test a frozen overlay's correlates in a second corpus", data=True)
    p.add_argument("--frozen", required=True, help="frozen overlay folder (reports/frozen/NAME)")
    p.add_argument("--label", required=True, help="label as the frozen overlay names it (its table LABEL.csv)")
    p.add_argument("--column", default=None, help="label column in the second corpus (default: the same name)")
    p.add_argument("--positive", default=None, help="positive values there (comma-separated; wildcards allowed)")
    p.add_argument("--negative", default=None, help="negative values there (comma-separated)")
    p.add_argument("--group-map", default=None, help="ORIGINAL=HERE segment groups, comma-separated (default: same names)")
    p.add_argument("--verdicts", default=None, help="original verdicts to test, comma-separated (default: robust correlate)")
    p.add_argument("--draws", type=COUNT, default=1000, help="random feature sets for the null replication rate")
    p.add_argument("--model", default=None, help="local model folder, if the frozen run's path does not exist here")
    p.add_argument("--sae", default=None, help="SAE checkpoint, if the frozen run's path does not exist here")
    p.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", required=True, help="output folder")

    p = _verb(sub, "merge", _cmd_merge, "join shard score stores; refuses overlapping or missing shards")
    p.add_argument("shards", nargs="+", help="shard store folders")
    p.add_argument("--out", required=True)

    p = _verb(sub, "train-sae", _cmd_train_sae, "train a TopK SAE on an activation dump", quiet=True)
    p.add_argument("--activations", required=True, help="activation dump folder")
    p.add_argument("--out", required=True)
    for flag, kind, default in (("--expansion", COUNT, 8), ("--k", COUNT, 128), ("--batch-size", COUNT, 4096),
                                ("--steps", COUNT, 100_000), ("--val-every", COUNT, 500), ("--seed", NON_NEGATIVE, 0)):
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--lr", type=POSITIVE, default=None, help="default 2e-4 / sqrt(d_sae / 16384)")

    p = _verb(sub, "eval-sae", _cmd_eval_sae, "held-out FVE, normalised L2, L0, dead fraction of an SAE")
    p.add_argument("--sae", required=True, help="checkpoint file or folder (pt, SAELens, sparsify, dictionary_learning)")
    p.add_argument("--activations", required=True, help="activation dump folder")
    p.add_argument("--split", default="heldout")
    p.add_argument("--k", type=COUNT, default=None, help="TopK k when the checkpoint does not say")
    p.add_argument("--out", required=True, help="writes OUT/test_eval/summary.json")

    p = _verb(sub, "inspect", _cmd_inspect, "terminal view of a run: verdicts, top correlates, one feature's splits")
    p.add_argument("run_dir")
    p.add_argument("--label", default=None)
    p.add_argument("--group", default=None, help="segment group (prompted_speech, vowel, cough, breath)")
    p.add_argument("--feature", default=None, help="e.g. feature_00161: its estimates across confound splits")
    p.add_argument("--top", type=COUNT, default=10)
    p.add_argument("--html", action="store_true", help="(re)write report.html and print its address")

    p = _verb(sub, "freeze", _cmd_freeze, "freeze a run's overlay tables under reports/frozen/NAME with a manifest")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True)
    p.add_argument("--dest", default="reports/frozen")

    p = _verb(sub, "regenerate", _cmd_regenerate, "rebuild frozen tables from their inputs; verify byte for byte",
              quiet=True)
    p.add_argument("frozen", help="e.g. reports/frozen/demo")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder)")
    p.add_argument("--salt", default=None, help="the run's salt (the demo's public salt is known)")

    p = _verb(sub, "audit", _cmd_audit, "re-check a run folder against the guardrails (exit 1 on any violation)")
    p.add_argument("run_dir")
    p.add_argument("--corpus-ids", default=None, help="CSV with an 'id' column of raw corpus ids to look for")
    p.add_argument("--min-cell", type=MIN_CELL, default=DEFAULT_MIN_CELL,
                   help="small-cell threshold the tables must honour (10 or more: a lower one would pass small cells)")

    p = _verb(sub, "build-default-sae", _cmd_build_default_sae, "regenerate the embedded default SAE", quiet=True)
    for flag, default, help_ in (("--out", None, "default: the package's own folder"),
                                 ("--work", "runs/default_sae_build", "scratch folder for corpus and states")):
        p.add_argument(flag, default=default, help=help_)
    return parser


@_guarded
def main(argv: list[str] | None = None) -> int:
    """``clinical-transfer VERB ...`` (also ``python -m clinical_transfer``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run-overlay"]:  # the main job under its own parser, whatever its options
        return run_overlay_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


# -- run-overlay ------------------------------------------------------------------------------------
def build_run_overlay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run-overlay", description="The main job: corpus -> inventory -> encoder -> "
                                f"SAE -> correlate overlays. {BANNER}")
    p.add_argument("--demo", action="store_true", help="write the demo corpus and run on the embedded default")
    _add_data_args(p)
    p.add_argument("--out", default="runs/overlay", help="output folder (default runs/overlay)")
    _add_encoder_args(p, defaults=False)
    p.add_argument("--sae", default=None, help="SAE checkpoint, or 'fit' for a label-blind SAE fit to the corpus "
                   "(default: fit for a real corpus, the embedded SAE for --demo)")
    p.add_argument("--sae-seeds", type=COUNT, default=None, help="corpus-fit SAEs with different seeds (stability; default 3)")
    p.add_argument("--sae-fit-on", choices=("split", "all"), default=None,
                   help="split: leave the dictionary participants out of the overlay (default); all: fit on everyone")
    p.add_argument("--adjust-acoustic", type=NON_NEGATIVE, default=None, metavar="K",
                   help="run every overlay again with the top-K eGeMAPS components as confounds (reported side by side)")
    p.add_argument("--inventory-only", action="store_true", help="stop after the inventory")
    _add_engine_args(p)
    return p


def _add_engine_args(p) -> None:
    g = p.add_argument_group("engine (scoring on a Ray cluster; needs the [cluster] extra)")
    g.add_argument("--engine", choices=["local", "ray"], default="local")
    g.add_argument("--ray-address", default=None, help="auto (a running cluster) or HOST:PORT; default: a local instance")
    g.add_argument("--workers", type=COUNT, default=1, help="encoder + SAE actors")
    g.add_argument("--gpus-per-worker", type=_number(float, 0), default=0.0)
    g.add_argument("--cpus-per-worker", type=POSITIVE, default=1.0)
    g.add_argument("--cpus-per-decoder", type=POSITIVE, default=1.0)


def _ray_options(a):
    if a.engine != "ray":
        return None
    from clinical_transfer.run.ray_engine import RayOptions

    return RayOptions(a.ray_address, a.workers, a.gpus_per_worker, a.cpus_per_worker, a.cpus_per_decoder)


@_guarded
def run_overlay_main(argv: list[str] | None = None) -> int:
    args = build_run_overlay_parser().parse_args(argv)
    out, opts = _out(args), _data(args)
    if args.inventory_only:
        if args.demo:
            run.prepare_demo(opts, out, progress=not args.quiet)
        _print_inventory(run.inventory(opts, out, progress=not args.quiet), out)
        return 0
    result = run.overlay_run(opts, out, progress=not args.quiet, demo=args.demo,
                             encoder={"name": args.encoder, "model": args.model, "layer": args.layer, "sae": args.sae},
                             sae_fit={"seeds": args.sae_seeds, "fit_on": args.sae_fit_on},
                             analysis={"adjust_acoustic": args.adjust_acoustic},
                             engine=args.engine, ray_options=_ray_options(args))
    _say(BANNER, result.summary(), f"report: {out / 'REPORT.md'} and {out / 'report.html'}; overlay tables under "
         f"{out / 'overlays'}", f"check it with: clinical-transfer audit {out}")
    return 0
