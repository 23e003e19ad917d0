"""Read members of a gzip'd tar that is published split into parts (``D.tar.gz.aa``, ``.ab``, ...).

Why: Coswara is published this way and its extracted copy is tens of GB. Only the ``.aa`` part has the
gzip header, so the parts must be read as one concatenated stream. We stream them through ``tarfile``
in pipe mode (``r|gz``) and hand back member bytes; nothing is extracted to disk.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ARCHIVE_SEP = "::"


class ConcatenatedParts(io.RawIOBase):
    """A read-only stream over several files read one after another."""

    def __init__(self, parts: list[Path]):
        super().__init__()
        self._parts = list(parts)
        self._index = 0
        self._fh: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._index < len(self._parts):
            if self._fh is None:
                self._fh = open(self._parts[self._index], "rb")
            n = self._fh.readinto(buffer)
            if n:
                return n
            self._fh.close()
            self._fh = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def split_parts(folder: Path, stem: str) -> list[Path]:
    """The parts ``stem.tar.gz.aa, .ab, ...`` in ``folder``, in order (a single ``stem.tar.gz`` too)."""
    parts = sorted(folder.glob(f"{stem}.tar.gz.*"))
    if not parts and (folder / f"{stem}.tar.gz").is_file():
        parts = [folder / f"{stem}.tar.gz"]
    return parts


def archive_key(parts: list[Path]) -> str:
    """How a set of parts is named in a ``source`` locator: the first part's path with ``.*``."""
    first = str(parts[0])
    return first[:-3] + ".*" if first.endswith(".aa") else first


def parts_from_key(key: str) -> list[Path]:
    """Inverse of :func:`archive_key`."""
    p = Path(key)
    if key.endswith(".*"):
        return sorted(p.parent.glob(p.name[:-2] + ".*"))
    return [p]


def iter_members(parts: list[Path], wanted: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) for regular files, in archive order; ``wanted`` filters by name."""
    with ConcatenatedParts(parts) as raw, tarfile.open(fileobj=io.BufferedReader(raw), mode="r|gz") as tar:
        for info in tar:
            if not info.isfile() or (wanted is not None and info.name not in wanted):
                continue
            fh = tar.extractfile(info)
            if fh is not None:
                yield info.name, fh.read()


def read_sources(sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
    """Yield (source, bytes or None if absent) for path or ``parts::member`` locators.

    Archive members are grouped so that each archive is streamed once, whatever the order asked.
    """
    by_archive: dict[str, set[str]] = {}
    for src in sources:
        if ARCHIVE_SEP in src:
            key, member = src.split(ARCHIVE_SEP, 1)
            by_archive.setdefault(key, set()).add(member)
        else:
            path = Path(src)
            yield src, path.read_bytes() if path.is_file() else None
    for key, members in by_archive.items():
        found = set()
        for name, data in iter_members(parts_from_key(key), members):
            found.add(name)
            yield f"{key}{ARCHIVE_SEP}{name}", data
        for name in sorted(members - found):
            yield f"{key}{ARCHIVE_SEP}{name}", None
