"""files.atomic_file / atomic_write: a target is replaced whole or left as it was."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from clinical_transfer.files import atomic_file, atomic_write


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "entry.json"
    atomic_write(target, '{"v": 1}')
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_file(target) as fh:
            fh.write(b'{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{"v": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.json"]


def test_concurrent_writers_of_one_entry_each_succeed_and_leave_one_whole_file(tmp_path):
    """Two recordings with identical audio share a cache key; threads wrote the same fixed temporary
    name before (interleaved bytes, or a rename of a file another thread had already renamed)."""
    target = tmp_path / "key.npy"
    payloads = [np.full(200_000, i, np.float64) for i in range(8)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                with atomic_file(target) as fh:
                    np.save(fh, payloads[i])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = np.load(target)
    assert got.shape == (200_000,) and len(np.unique(got)) == 1 and 0 <= got[0] < 8  # one writer's whole array
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.npy"]


def test_text_is_written_as_utf8(tmp_path):
    atomic_write(tmp_path / "t.txt", "Grüße")
    assert (tmp_path / "t.txt").read_bytes() == "Grüße".encode()


def test_permissions_are_those_of_a_plain_write(tmp_path):
    """tempfile.mkstemp would leave every cache entry 0600: unreadable to others sharing the cache."""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    atomic_write(tmp_path / "atomic.bin", b"x")
    assert (tmp_path / "atomic.bin").stat().st_mode == plain.stat().st_mode
