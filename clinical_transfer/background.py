"""Background threads for the GPU paths: a bounded prefetch of an iterator and an ordered job runner.

Why a module of its own: scoring and activation dumps both decode audio on the CPU while the accelerator
works, and both hand host work (collecting results, writing files) to a second thread so the GPU is not
idle meanwhile. Neither knows anything of audio or models.
"""

from __future__ import annotations

import queue
import threading


class Prefetch:
    """Run an iterator in a background thread, a bounded number of items ahead.

    Why: decoding and resampling run on the CPU while the accelerator encodes the previous batch, so the
    GPU does not wait on the disk; the bound keeps memory flat. Errors are re-raised in the consumer.
    """

    def __init__(self, iterator, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(("error", exc))

    def __iter__(self):
        try:
            while True:
                kind, item = self._q.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            self._stop.set()


class Writer:
    """One background thread that runs submitted jobs in order, at most ``depth`` waiting.

    Why: collecting a chunk's aggregates from the GPU synchronises on it, and writing the cache is
    host work; on a second thread both overlap the next chunk's encoder passes. A job's error is
    re-raised in the submitting thread (at the next ``submit`` or at ``close``), never lost.
    """

    def __init__(self, depth: int = 1):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job[0](*job[1:])
                except BaseException as exc:  # noqa: BLE001 - handed to the submitting thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn, *args) -> None:
        self._raise()
        self._q.put((fn, *args))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._raise()
