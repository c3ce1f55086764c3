"""Logging that names the call.

Every task of a call runs with ``CALL_ID`` set (Trio copies context variables into the
tasks a nursery starts), and a filter stamps it on every record, whichever layer logs.
So media and provider code log plainly and still name their call.
"""

from __future__ import annotations

import contextvars
import logging
import sys

CALL_ID: contextvars.ContextVar[str] = contextvars.ContextVar("trivox_call_id", default="-")

FORMAT = "%(asctime)s %(levelname)-7s [%(call_id)s] %(name)s: %(message)s"


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_id = CALL_ID.get()
        return True


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_CallIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
