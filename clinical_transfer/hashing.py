"""Content hashes and stable id hashes: the one place the project turns bytes or ids into digests.

Why one home: a cache key, a shard assignment, a held-out split, a matching order and a pseudonym must
each be computed the same way everywhere, or a resumed run, a merged shard or a regenerated frozen table
silently stops matching. Every function here is a pure function of its inputs (no process state).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from clinical_transfer.files import atomic_write

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a string's UTF-8 bytes (keys, configs, salts)."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (model weights can be many GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_unit(key: str) -> float:
    """A uniform number in [0, 1) fixed by ``key`` (first 48 bits of its SHA-256).

    Used for seeded participant splits (``f"{seed}:{participant}"``): independent of row order and of
    the process, so a split is the same on every machine.
    """
    return int(sha256_text(key)[:12], 16) / 16**12


def stable_bucket(key: str, n: int) -> int:
    """Which of ``n`` buckets ``key`` falls in (shards of a corpus for N workers)."""
    return int(sha256_text(key)[:12], 16) % n


def seeded_order_key(seed: int, key: str) -> str:
    """A sort key that orders ids deterministically for a seed without exposing the id itself."""
    return sha256_text(f"{seed}:{key}")


@functools.lru_cache(maxsize=8)
def salt_digest(salt: str) -> str:
    """What a manifest records of the pseudonym salt: a slow, keyed digest (scrypt), never the salt.

    Why slow: Coswara's ids are public, so a recorded digest that is cheap to recompute lets anyone test
    guessed salts (the placeholder, short words) and, with a hit, undo every pseudonym. scrypt costs
    ~50 ms and 16 MiB a guess. Why fixed (no per-run random value): shards of one run and a frozen run's
    regeneration must compare digests without knowing each other's salt; the 16-character minimum
    (:func:`clinical_transfer.guardrails.check_salt`) is what keeps the search space out of reach.
    Remembered per process: a run writes it into several manifests and each scrypt costs ~50 ms.
    """
    key = hashlib.scrypt(salt.encode(), salt=b"clinical-transfer/salt-digest/v1", n=2**14, r=8, p=1, dklen=32)
    return "scrypt:" + key.hex()


def pseudonym(salt: str, key: str, prefix: str) -> str:
    """Salted pseudonym ``prefix_<12 hex>`` of one id (see :func:`clinical_transfer.guardrails.pseudonymise`)."""
    return f"{prefix}_{sha256_text(f'{salt}:{key}')[:12]}"


def digest_cache_dir() -> Path:
    """Where remembered file digests live: ``$CLINICAL_TRANSFER_DIGEST_CACHE``, else
    ``$XDG_CACHE_HOME/clinical-transfer/digests`` (``~/.cache/...``)."""
    env = os.environ.get("CLINICAL_TRANSFER_DIGEST_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clinical-transfer" / "digests"


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def file_digest(path: str | Path) -> str:
    """:func:`sha256_file`, remembered across runs while the file's size, mtime, ctime and inode stay put.

    Why: a 12B model's weights are ~13 GB; hashing them on every run cost 18 s of each run's start. The
    digest is the same full SHA-256 as before (cache keys and manifests do not change); it is re-read
    whenever the file may have changed — any write moves ctime, which no user tool can set back, so a
    changed byte always gives a new digest and a ``touch`` only costs one re-read (same digest). The
    remembered entry is a small JSON file under :func:`digest_cache_dir`; if that folder cannot be
    written the digest is simply recomputed each time.
    """
    path = Path(path).resolve()
    key = _stat_key(path)
    entry = digest_cache_dir() / f"{sha256_text(str(path))[:32]}.json"
    try:
        saved = json.loads(entry.read_text())
        if saved.get("path") == str(path) and all(saved.get(k) == v for k, v in key.items()):
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(path)
    if _stat_key(path) != key:  # written to while we read it: do not remember a digest of a moving file
        return digest
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(entry, json.dumps({"path": str(path), **key, "sha256": digest}))
    except OSError:
        pass
    return digest


def remembered(key: str, compute) -> str:
    """A digest derived from other digests (``key``), computed once by ``compute()`` and remembered
    under :func:`digest_cache_dir` (e.g. an SAE's tensor hash keyed by its checkpoint files' digests)."""
    entry = digest_cache_dir() / f"derived_{sha256_text(key)[:32]}.txt"
    try:
        text = entry.read_text().strip()
        if len(text) == 64:
            return text
    except OSError:
        pass
    value = compute()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(value)
    except OSError:
        pass
    return value
