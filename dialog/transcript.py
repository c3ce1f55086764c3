"""Per-call transcripts that survive a crash.

One JSON-lines file per call, one line per event, each line flushed to the OS and fsynced
before the writer returns: if the process dies mid-call, every line written so far is on
disk. Writes are rare (an utterance, a reply, the end of the call), so an fsync per line
costs nothing that matters, and it runs on a worker thread so the event loop never waits
on the disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import trio


class Transcript:
    """Append-only event log of one call. ``directory=None`` keeps nothing."""

    def __init__(self, directory: str | os.PathLike[str] | None, call_id: str) -> None:
        self.call_id = call_id
        self.path: Path | None = None
        self._file = None
        if directory:
            folder = Path(directory)
            folder.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            self.path = folder / f"{stamp}-{_safe(call_id)}.jsonl"
            # Line buffering would still leave the last line in Python's buffer; we flush
            # and fsync explicitly instead.
            self._file = open(self.path, "a", encoding="utf-8")

    async def write(self, kind: str, **fields: Any) -> None:
        """Append one event, durable when this returns."""
        if self._file is None:
            return
        line = json.dumps({"t": round(time.time(), 3), "call": self.call_id, "kind": kind, **fields},
                          ensure_ascii=False)
        file = self._file

        def append() -> None:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())

        # Shielded: a cancelled call still gets its last lines (the end-of-call record).
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(append)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _safe(text: str) -> str:
    """A call id as a file name: SIP Call-IDs may hold '@', '/' and worse."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
