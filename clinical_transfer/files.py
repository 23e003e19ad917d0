"""Files written whole or not at all: write beside the target, then rename over it.

Why one place: every cache entry, journal and checkpoint the project keeps is read back by a later run
that trusts it (score cache, inventory cache, digest cache, eGeMAPS cache, a dump's progress journal, a
training checkpoint). A run killed mid-write must leave the previous file or none, never half of one.
Six modules did this by hand with fixed temporary names (``.tmp``, ``.tmp<pid>``), which two writers of
the same entry at once — two threads given recordings with identical audio, two runs sharing a cache —
could interleave or rename from under each other. Here every write gets its own temporary file in the
target's folder (a rename is atomic only within one file system), removed if the write fails. A process
killed outright (SIGKILL, power loss) can leave that hidden ``.<name>.<random>.tmp`` behind; nothing
reads it, and it never stands in for the target.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` when the block ends without an exception.

    For writers that stream (``torch.save`` of a multi-GB checkpoint, ``np.save``); see :func:`atomic_write`
    for bytes already in memory. The folder must exist.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # os.open with 0o666 (less the umask), as a plain open() would: tempfile.mkstemp makes files 0600,
    # and a cache shared by a team (or a checkpoint handed on) must stay readable to whom it was before
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all."""
    with atomic_file(path) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
