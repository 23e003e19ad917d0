"""Content hashes and stable id hashes: the one place the project turns bytes or ids into digests.

Why one home: a cache key, a shard assignment, a held-out split, a matching order and a pseudonym must
each be computed the same way everywhere, or a resumed run, a merged shard or a regenerated frozen table
silently stops matching. Every function here is a pure function of its inputs (no process state).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def pseudonym(salt: str, key: str, prefix: str) -> str:
    """Salted pseudonym ``prefix_<12 hex>`` of one id (see :func:`clinical_transfer.guardrails.pseudonymise`)."""
    return f"{prefix}_{sha256_text(f'{salt}:{key}')[:12]}"
