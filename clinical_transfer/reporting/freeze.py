"""Frozen overlay tables: a compact, rounded record of a run that anyone can rebuild and verify.

``freeze(run, dest)`` writes, per label, the rows that are not ``not significant`` (rounded to 6
significant digits, so that last-bit floating-point noise between machines cannot break the check) and a
verdict-count table, plus ``MANIFEST.json`` (resolved config, input hashes, versions, seed, table hashes).
:func:`compare` checks a rebuilt folder against a frozen one byte for byte, table by table; re-running the
job from the manifest's inputs is orchestration's work (:mod:`clinical_transfer.run.regenerate`).
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from clinical_transfer import __version__, guardrails
from clinical_transfer.errors import ClinicalTransferError, named, read_json, reading
from clinical_transfer.hashing import sha256_file

KEEP = ("label", "contrast", "segment_group", "feature", "role", "n_participants_pos", "n_participants_neg",
        "beta_raw", "beta_adj", "se_adj", "q_raw", "q_adj", "attenuation", "auroc", "verdict")


#: Distributions whose versions can move the frozen numbers (recorded, so a drift can be traced).
NUMERICAL_STACK = ("numpy", "scipy", "pandas", "statsmodels", "torch", "librosa", "soundfile", "soxr", "numba")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


RERUN = "run run-overlay again into a new --out (scores come from the cache)"
"""How to get a good run folder when one is damaged (freeze, inspect)."""
RESTORE = "restore it from version control, or freeze the run again"
"""How to get a good frozen folder when one is damaged (regenerate, replicate, compare)."""


def _require(obj, keys: tuple[str, ...], name: str) -> None:
    """A manifest's required keys, inside :func:`~clinical_transfer.errors.reading` (a ValueError names them)."""
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}")


def _round(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: float(f"{v:.6g}") if pd.notna(v) else v)
    return out


def _tables(run: Path) -> dict[str, pd.DataFrame]:
    tables, counts = {}, []
    for folder in sorted(p for p in (run / "overlays").iterdir() if p.is_dir()):
        if not (folder / "overlay.parquet").is_file():
            raise ValueError(f"overlays/{folder.name}/overlay.parquet is missing")
        t = named(folder / "overlay.parquet", pd.read_parquet)
        counts.append(t.groupby(["label", "role", "segment_group", "verdict"]).size().rename("n_features").reset_index())
        keep = t[t["verdict"] != "not significant"][list(KEEP)]
        tables[f"{folder.name}.csv"] = _round(keep.sort_values(["role", "segment_group", "feature"], kind="stable"))
    tables["verdict_counts.csv"] = pd.concat(counts, ignore_index=True)
    return tables


def freeze(run: str | Path, dest: str | Path) -> Path:
    """Write the frozen tables of the run folder ``run`` and their MANIFEST.json into ``dest``."""
    run, dest = Path(run), Path(dest)
    if not (run / "run_manifest.json").is_file() or not (run / "overlays").is_dir():
        raise ClinicalTransferError(f"{run} is not a run folder (no run_manifest.json or overlays/)",
                                    "pass the --out folder of run-overlay")
    with reading(f"the run folder {run}", RERUN):
        manifest = read_json(run / "run_manifest.json")
        _require(manifest, ("resolved_config", "config_sha256", "inputs"), "run_manifest.json")
        tables = _tables(run)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.csv"):
        old.unlink()
    hashes = {}
    for name, table in tables.items():
        path = guardrails.write_table(table, dest / name, formats=("csv",))[0]
        hashes[name] = sha256_file(path)
    guardrails.write_json({
        "resolved_config": manifest["resolved_config"], "config_sha256": manifest["config_sha256"],
        "config_source": manifest.get("config_source"), "inputs": manifest["inputs"], "demo": manifest.get("demo"), "seed": manifest["resolved_config"]["seed"],
        "versions": {"clinical_transfer": __version__, "python": platform.python_version(),
                     **{name: _version(name) for name in NUMERICAL_STACK}},
        "rounding": "floats rounded to 6 significant digits", "tables_sha256": hashes,
    }, dest / "MANIFEST.json")
    return dest


def read_frozen_manifest(frozen: str | Path) -> dict:
    """MANIFEST.json of a frozen folder, checked (the one reader of regenerate, replicate and compare)."""
    frozen = Path(frozen)
    if not (frozen / "MANIFEST.json").is_file():
        raise ClinicalTransferError(f"{frozen} is not a frozen overlay (no MANIFEST.json)",
                                    "pass a folder under reports/frozen/ (written by `clinical-transfer freeze`)")
    with reading(f"the frozen overlay {frozen}", RESTORE):
        m = read_json(frozen / "MANIFEST.json")
        _require(m, ("resolved_config", "inputs", "tables_sha256"), "MANIFEST.json")
    return m


def compare(frozen: Path, rebuilt: Path) -> list[str]:
    """Differences between a frozen folder and a freshly rebuilt one (empty = byte-identical)."""
    m = read_frozen_manifest(frozen)
    new = json.loads((rebuilt / "MANIFEST.json").read_text())
    problems = []
    if new["inputs"] != m["inputs"]:
        problems.append(f"inputs differ: frozen {m['inputs']} vs rebuilt {new['inputs']}")
    for name, digest in m["tables_sha256"].items():
        got = new["tables_sha256"].get(name)
        on_disk = sha256_file(frozen / name) if (frozen / name).is_file() else None
        if on_disk != digest:
            problems.append(f"{name}: changed since it was frozen (its hash no longer matches MANIFEST.json)")
        if got != digest or got != on_disk:
            a = pd.read_csv(frozen / name, comment="#") if (frozen / name).is_file() else pd.DataFrame()
            b = pd.read_csv(rebuilt / name, comment="#") if (rebuilt / name).is_file() else pd.DataFrame()
            problems.append(f"{name}: differs (frozen {len(a)} rows, rebuilt {len(b)} rows)")
    for name in sorted(set(new["tables_sha256"]) - set(m["tables_sha256"])):
        problems.append(f"{name}: rebuilt but not in the frozen set")
    return problems
