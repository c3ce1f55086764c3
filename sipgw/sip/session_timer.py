"""RFC 4028 session timers, sans-IO: how long a call lives without a refresh, and who refreshes.

A SIP call has no keepalive of its own: when a peer vanishes without a BYE (a crash, a
lost NAT binding, a proxy that forgot the dialog), the call stays up for ever. Session
timers fix that: every INVITE or UPDATE in the call may carry ``Session-Expires``, the
two sides agree on an interval and a refresher, and the refresher sends a re-INVITE or
UPDATE before the interval runs out. The other side ends the call with BYE when no
refresh came (section 10). Asterisk asks for them by default (pjsip ``timers=yes``).

This module is the arithmetic and the header grammar; ``ua.py`` owns the clocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .message import Headers, Response

#: Our smallest acceptable interval; RFC 4028 section 4 recommends 90 s, the minimum.
MIN_SE = 90
#: The interval we ask for when a caller supports timers but asked for none (section 4).
DEFAULT_INTERVAL = 1800


class IntervalTooSmall(Exception):
    """The request asked for less than we accept: answer 422 with ``Min-SE`` (section 9)."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"Session-Expires below our Min-SE of {min_se} s")
        self.min_se = min_se


@dataclass(frozen=True)
class SessionTimer:
    """An agreed interval, and whether trivox is the side that refreshes."""

    interval: int
    we_refresh: bool

    def refresh_in(self) -> float:
        """The refresher sends its refresh at half the interval (section 7.4)."""
        return self.interval / 2

    def expire_in(self) -> float:
        """The other side gives up this long after the last refresh (section 10)."""
        return self.interval - min(32, self.interval / 3)

    def response_headers(self, peer_supports: bool) -> list[tuple[str, str]]:
        """Headers for our 2xx to the request that set this timer (we are its UAS)."""
        refresher = "uas" if self.we_refresh else "uac"
        headers = [("Session-Expires", f"{self.interval};refresher={refresher}")]
        if peer_supports:
            headers.append(("Require", "timer"))
        return headers

    def request_headers(self) -> list[tuple[str, str]]:
        """Headers for a refresh we send (we are its UAC, and keep refreshing)."""
        return [("Session-Expires", f"{self.interval};refresher=uac"), ("Min-SE", str(MIN_SE)),
                ("Supported", "timer")]


def supports_timer(headers: Headers) -> bool:
    return any(tag.lower() == "timer" for tag in headers.get_all("Supported"))


def negotiate(headers: Headers, *, min_se: int = MIN_SE) -> SessionTimer | None:
    """The timer for a request we answer (INVITE, re-INVITE or UPDATE), by section 9.

    - With ``Session-Expires``: that interval (422 below our ``min_se``), refreshed by the
      side its ``refresher`` names; without one, by the caller when it supports timers,
      else by us (a proxy asked on a caller's behalf, section 9).
    - Without, from a caller that supports timers: our default interval, refreshed by it.
    - Otherwise no timer.
    """
    peer_supports = supports_timer(headers)
    interval, refresher = _parse_session_expires(headers.get("Session-Expires") or "")
    if interval is None:
        return SessionTimer(max(DEFAULT_INTERVAL, min_se), we_refresh=False) if peer_supports else None
    if interval < min_se:
        raise IntervalTooSmall(min_se)
    if refresher is None:
        refresher = "uac" if peer_supports else "uas"
    return SessionTimer(interval, we_refresh=refresher == "uas" or not peer_supports)


def from_response(response: Response) -> SessionTimer | None:
    """The timer a 2xx to our refresh settled (section 7.2); none if it carries none."""
    interval, refresher = _parse_session_expires(response.headers.get("Session-Expires") or "")
    if interval is None:
        return None
    return SessionTimer(max(interval, MIN_SE), we_refresh=refresher != "uas")


def min_se_of(response: Response) -> int | None:
    """The ``Min-SE`` of a 422 (section 7.3), so the refresh can be sent again with it."""
    match = re.match(r"\s*(\d+)", response.headers.get("Min-SE") or "")
    return int(match.group(1)) if match else None


def _parse_session_expires(value: str) -> tuple[int | None, str | None]:
    """``delta-seconds *(;param)`` (section 4); a missing or malformed value is no timer."""
    parts = [part.strip() for part in value.split(";")]
    if not parts[0].isdigit():
        return None, None
    interval = int(parts[0])
    refresher = None
    for param in parts[1:]:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "refresher" and param_value.strip().lower() in ("uac", "uas"):
            refresher = param_value.strip().lower()
    return interval, refresher
