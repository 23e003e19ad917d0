"""The output folder of a run: fresh, writable, and never a folder that holds anything else.

Why: a reused folder kept an earlier run's overlays and figures, and ``freeze`` then froze tables that the
manifest did not list; a read-only folder failed only after the whole inventory. So a run checks its
folder first: a non-empty folder is refused unless ``--overwrite``, which clears it — and only when it
is recognisably a clinical-transfer output (never ``.``, a home folder, or the corpus itself).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from clinical_transfer.errors import ClinicalTransferError

#: Files one of whose presence marks a folder as a clinical-transfer output (what --overwrite may clear).
RUN_MARKERS = ("run_manifest.json", "manifest.json", "inventory.csv", "REPORT.md", "inventory")


def prepare_output(out: str | Path, overwrite: bool = False, inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """Check (and with ``overwrite`` clear) the output folder ``out`` before any work; returns it.

    ``inputs``: corpus folders the run reads — an output folder may not be one of them or hold them.
    """
    out = Path(out)
    where = out.resolve()
    protected = {Path.cwd().resolve(), Path.home().resolve(), Path(where.anchor)}
    if where in protected:
        raise ClinicalTransferError(f"--out {out} is the current, home or root folder",
                                    "name a folder of its own for the run, e.g. --out runs/my_run")
    for src in inputs:
        corpus = Path(src).resolve() if src else None
        if corpus and (where == corpus or where in corpus.parents):
            raise ClinicalTransferError(f"--out {out} is or holds the corpus folder {src}",
                                        "write outputs outside the corpus, e.g. --out runs/my_run")
    if where.exists() and not where.is_dir():
        raise ClinicalTransferError(f"--out {out} exists and is not a folder", "choose another --out")
    if where.is_dir() and any(where.iterdir()):
        if not overwrite:
            raise ClinicalTransferError(f"output folder {out} is not empty (an earlier run?)",
                                        "pass --overwrite to clear it first, or choose a new --out")
        if not any((where / m).exists() for m in RUN_MARKERS):
            raise ClinicalTransferError(f"output folder {out} is not empty and does not look like a run's output "
                                        "(no run_manifest.json, manifest.json or inventory); not cleared",
                                        "choose a new --out")
        shutil.rmtree(where)
    existing = next(p for p in (where, *where.parents) if p.exists())  # created by the run, not here
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ClinicalTransferError(f"cannot write to output folder {out}: {exc.strerror or exc}",
                                    "choose a folder you can write to with --out") from exc
    return out
