"""Read members of a gzip'd tar that is published split into parts (``D.tar.gz.aa``, ``.ab``, ...).

Why: Coswara is published this way and its extracted copy is tens of GB. Only the ``.aa`` part has the
gzip header, so the parts must be read as one concatenated stream. We stream them through ``tarfile``
in pipe mode (``r|gz``) and hand back member bytes; nothing is extracted to disk.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHIVE_SEP = "::"
#: ``<archive key>::<member>``; the key ends in the archive suffix, so a folder named ``a::b`` is still a path.
_MEMBER_SOURCE = re.compile(r"^(?P<key>.*?\.(?:tar\.gz(?:\.\*)?|tgz|tar))::(?P<member>.+)$")


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


_PART = re.compile(r"\.tar\.gz\.([a-z]{2})$")

#: Members larger than this are first judged by their first :data:`HEAD_BYTES` (see ``screen`` in
#: :func:`iter_members`); 32 MB is ~5.8 minutes of 48 kHz 16-bit mono audio.
SCREEN_ABOVE_BYTES = 32 << 20
HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class ScreenedOut:
    """A member not read into memory: ``screen`` rejected it from its first bytes. ``sha256`` is over all
    its bytes (streamed), so it is the same hash a full read would give."""

    info: Any
    """What the screen returned (for Coswara: the declared duration in seconds)."""
    sha256: str
    size: int


@dataclass
class PartSet:
    """The parts of one split archive as found on disk: what is read, and what is not and why."""

    stem: str
    parts: list[Path]
    ignored: list[Path] = field(default_factory=list)
    """Files beside the parts that are not ``STEM.tar.gz.[a-z][a-z]`` (``.aa.bak``, ``.part``, ...)."""
    gap: str | None = None
    """The first missing suffix when the parts are not contiguous from ``aa`` (parts after it are not read)."""

    def notes(self) -> list[str]:
        out = [f"{p.name}: not an archive part ({self.stem}.tar.gz.aa, .ab, ...), ignored" for p in self.ignored]
        if self.gap:
            out.append(f"{self.stem}.tar.gz.{self.gap} is missing: the parts after it are not read")
        return out


def _suffix(i: int) -> str:
    return chr(ord("a") + i // 26) + chr(ord("a") + i % 26)


def find_parts(folder: Path, stem: str) -> PartSet:
    """The parts ``stem.tar.gz.aa, .ab, ...`` in order and contiguous from ``aa`` (a single ``stem.tar.gz``
    too). Why strict: ``tarfile`` reads whatever bytes follow, so a stray ``.aa.bak`` taken as a part would
    end the stream at its header and silently lose every later member."""
    candidates = sorted(folder.glob(f"{stem}.tar.gz.*"))
    named = {m.group(1): p for p in candidates if (m := _PART.search(p.name)) and p.name == f"{stem}.tar.gz.{m.group(1)}"}
    ignored = [p for p in candidates if p not in named.values()]
    if not named:
        single = folder / f"{stem}.tar.gz"
        return PartSet(stem, [single] if single.is_file() else [], ignored)
    parts, gap = [], None
    for i in range(len(named) + 1):
        suffix = _suffix(i)
        if suffix not in named:
            gap = suffix if i < len(named) else None
            break
        parts.append(named[suffix])
    return PartSet(stem, parts, ignored, gap)


def split_parts(folder: Path, stem: str) -> list[Path]:
    """The parts that are read (see :func:`find_parts`)."""
    return find_parts(folder, stem).parts


def archive_key(parts: list[Path]) -> str:
    """How a set of parts is named in a ``source`` locator: the first part's path with ``.*``."""
    first = str(parts[0])
    return first[:-3] + ".*" if first.endswith(".aa") else first


def parts_from_key(key: str) -> list[Path]:
    """Inverse of :func:`archive_key`."""
    p = Path(key)
    if key.endswith(".*"):
        return split_parts(p.parent, p.name[:-len(".tar.gz.*")])
    return [p]


def _screened(fh, head: bytes, size: int, info: Any) -> ScreenedOut:
    digest = hashlib.sha256(head)
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    return ScreenedOut(info, digest.hexdigest(), size)


def iter_members(parts: list[Path], wanted: set[str] | None = None, faults: list[str] | None = None,
                 screen: Callable[[bytes, int], Any] | None = None) -> Iterator[tuple[str, bytes | ScreenedOut]]:
    """Yield (member name, bytes) for regular files, in archive order; ``wanted`` filters by name.

    A member name seen twice (what ``tar -r`` appends produce) yields its *first* copy only — the one the
    inventory hashed, so the bytes encoded are the bytes whose hash keys the cache. A truncated, corrupt or
    missing part ends the stream: what was read is kept, and the reason goes to ``faults`` (a list the
    caller owns), never a traceback. ``screen(head, size)``, for members over :data:`SCREEN_ABOVE_BYTES`:
    a non-None answer from their first bytes yields a :class:`ScreenedOut` instead of the bytes (a
    1-hour recording is hashed in 1 MB reads, never held whole).
    """
    faults = faults if faults is not None else []
    seen: set[str] = set()
    try:
        with ConcatenatedParts(parts) as raw, tarfile.open(fileobj=io.BufferedReader(raw), mode="r|gz") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.name in seen:
                    faults.append(f"{info.name}: a second member with this name in {parts[0].name}.. (first copy used)")
                    continue
                seen.add(info.name)
                if wanted is not None and info.name not in wanted:
                    continue
                fh = tar.extractfile(info)
                if fh is None:
                    continue
                if screen is not None and info.size > SCREEN_ABOVE_BYTES:
                    head = fh.read(HEAD_BYTES)
                    verdict = screen(head, info.size)
                    yield info.name, _screened(fh, head, info.size, verdict) if verdict is not None else head + fh.read()
                else:
                    yield info.name, fh.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        where = ", ".join(p.name for p in parts) if len(parts) <= 3 else f"{parts[0].name} .. {parts[-1].name}"
        faults.append(f"archive {where} unreadable after {len(seen)} member(s) ({type(exc).__name__}: {exc}); "
                      "a part is truncated, corrupt or out of order")


def read_sources(sources: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
    """Yield (source, bytes or None if absent) for path or ``parts::member`` locators.

    Archive members are grouped so that each archive is streamed once, whatever the order asked.
    """
    by_archive: dict[str, set[str]] = {}
    for src in sources:
        m = _MEMBER_SOURCE.match(src)
        if m:
            by_archive.setdefault(m["key"], set()).add(m["member"])
        else:
            path = Path(src)
            yield src, path.read_bytes() if path.is_file() else None
    for key, members in by_archive.items():
        found = set()
        parts = parts_from_key(key)
        for name, data in iter_members(parts, members) if parts else ():
            found.add(name)
            yield f"{key}{ARCHIVE_SEP}{name}", data
        for name in sorted(members - found):
            yield f"{key}{ARCHIVE_SEP}{name}", None
