"""SIP transactions, sans-IO (RFC 3261 section 17, with RFC 6026's Accepted state).

A transaction is a small state machine that owns retransmission for one request and its
responses over an unreliable transport. It does no I/O: methods take the current time and
return the datagrams to send, and ``deadline`` says when ``on_timer`` must be called next.
The UA core (``ua.py``) owns the transactions, feeds them and routes their output.

The state tables, in the words of RFC 3261 section 17. Over a reliable transport (TCP,
TLS: ``reliable=True``) nothing is retransmitted (no Timers A, E, G) and the timers that
only absorb retransmissions (D, I, J, K) are zero; Timers B, F and H still bound the wait.

INVITE server (17.2.1, RFC 6026 section 8.7):
    Proceeding --1xx--> Proceeding           retransmitted INVITE: resend last 1xx
    Proceeding --2xx--> Accepted             Timer L = 64*T1; the UA core resends the 2xx
    Proceeding --300-699--> Completed        Timer G = T1 (doubling, cap T2), Timer H = 64*T1
    Completed --ACK--> Confirmed             Timer I = T4
    Completed --Timer H--> Terminated        (no ACK: tell the TU)
    Confirmed --Timer I--> Terminated
    Accepted --Timer L--> Terminated         retransmitted INVITE is absorbed, not resent

non-INVITE server (17.2.2):
    Trying --final--> Completed              Timer J = 64*T1; retransmitted request: resend final
    Completed --Timer J--> Terminated

INVITE client (17.1.1, RFC 6026 section 8.4): our re-INVITE (a session refresh)
    Calling --Timer A--> Calling             resend INVITE, A doubles (no cap)
    Calling/Proceeding --2xx--> Accepted     Timer M = 64*T1; the UA core sends the ACK
                                             and resends it for each retransmitted 2xx
    Calling/Proceeding --300-699--> Completed  ACK sent by the transaction; Timer D = 32 s
    Completed --final again--> Completed     resend the ACK
    Calling --Timer B (64*T1)--> Terminated  (timeout: tell the TU)

non-INVITE client (17.1.2):
    Trying --Timer E--> Trying               resend request, E = min(2E, T2)
    Trying --final--> Completed              Timer K = T4
    Trying --Timer F (64*T1)--> Terminated   (timeout: tell the TU)
    Completed --Timer K--> Terminated
"""

from __future__ import annotations

import enum

from .message import Headers, Request, Response

#: RFC 3261 section 17.1.1.1: RTT estimate, maximum retransmit interval for non-INVITE
#: requests and INVITE responses, and the time a message may linger in the network.
T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMEOUT = 64 * T1
#: Timer D: how long an INVITE client transaction absorbs retransmitted final responses.
TIMER_D = 32.0


def earliest(*times: float | None) -> float | None:
    """The soonest of the timers that are set."""
    present = [t for t in times if t is not None]
    return min(present) if present else None


class Retransmission:
    """One datagram resent at T1, 2*T1, 4*T1, ... capped at T2.

    The schedule of Timers A, E and G (RFC 3261 sections 17.1.1.2, 17.1.2.2, 17.2.1) and of
    the UAS's 2xx retransmission (section 13.3.1.4).
    """

    def __init__(self, datagram: bytes, now: float, cap: float = T2) -> None:
        """``cap`` bounds the interval; Timer A (an INVITE request) has none."""
        self.datagram = datagram
        self.next_at = now + T1
        self._interval = T1
        self._cap = cap

    def due(self, now: float) -> bytes | None:
        """The datagram if it is time to resend it (and the next time is set)."""
        if now < self.next_at:
            return None
        self._interval = min(self._interval * 2, self._cap)
        self.next_at = now + self._interval
        return self.datagram


class State(enum.Enum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class InviteServerTransaction:
    """RFC 3261 section 17.2.1 with RFC 6026's Accepted state."""

    def __init__(self, request: Request, now: float, reliable: bool = False) -> None:
        self.request = request
        self.reliable = reliable
        self.state = State.PROCEEDING
        self.timed_out = False
        self._last: bytes | None = None
        self._retransmit: Retransmission | None = None  # Timer G
        self._end_at: float | None = None

    @property
    def deadline(self) -> float | None:
        return earliest(self._retransmit.next_at if self._retransmit else None, self._end_at)

    def respond(self, response: Response, now: float) -> bytes:
        """Send ``response`` for the INVITE; returns the datagram."""
        if self.state is not State.PROCEEDING:
            raise RuntimeError(f"cannot respond in state {self.state.value}")
        self._last = response.to_bytes()
        if 200 <= response.status < 300:
            self.state = State.ACCEPTED
            self._end_at = now + TIMEOUT  # Timer L
        elif response.status >= 300:
            self.state = State.COMPLETED
            self._retransmit = None if self.reliable else Retransmission(self._last, now)  # Timer G
            self._end_at = now + TIMEOUT  # Timer H
        return self._last

    def on_retransmission(self) -> bytes | None:
        """A retransmitted INVITE: resend the last response, except in Accepted."""
        if self.state in (State.PROCEEDING, State.COMPLETED):
            return self._last
        return None

    def on_ack(self, now: float) -> None:
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self._retransmit = None
            self._end_at = now + (0 if self.reliable else T4)  # Timer I

    def on_timer(self, now: float) -> bytes | None:
        if self._end_at is not None and now >= self._end_at:
            self.timed_out = self.state is State.COMPLETED  # Timer H: the ACK never came
            self.state = State.TERMINATED
            self._retransmit = self._end_at = None
            return None
        return self._retransmit.due(now) if self._retransmit else None


class NonInviteServerTransaction:
    """RFC 3261 section 17.2.2 (no provisional responses: we answer at once)."""

    def __init__(self, request: Request, now: float, reliable: bool = False) -> None:
        self.request = request
        self.reliable = reliable
        self.state = State.TRYING
        self._last: bytes | None = None
        self._end_at: float | None = None

    @property
    def deadline(self) -> float | None:
        return self._end_at

    def respond(self, response: Response, now: float) -> bytes:
        if self.state is not State.TRYING:
            raise RuntimeError(f"cannot respond in state {self.state.value}")
        self._last = response.to_bytes()
        if response.status >= 200:
            self.state = State.COMPLETED
            self._end_at = now + (0 if self.reliable else TIMEOUT)  # Timer J
        return self._last

    def on_retransmission(self) -> bytes | None:
        return self._last

    def on_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            self.state = State.TERMINATED
            self._end_at = None


class NonInviteClientTransaction:
    """RFC 3261 section 17.1.2: our BYE (and later OPTIONS, REGISTER, NOTIFY)."""

    def __init__(self, request: Request, now: float, reliable: bool = False) -> None:
        self.request = request
        self.reliable = reliable
        self.state = State.TRYING
        self.response: Response | None = None
        self.timed_out = False
        self._datagram = request.to_bytes()
        self._retransmit = None if reliable else Retransmission(self._datagram, now)  # Timer E
        self._end_at: float | None = now + TIMEOUT  # Timer F

    def start(self) -> bytes:
        return self._datagram

    @property
    def deadline(self) -> float | None:
        return earliest(self._retransmit.next_at if self._retransmit else None, self._end_at)

    def on_response(self, response: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # a retransmitted final response: absorbed in Completed
        if response.status < 200:
            self.state = State.PROCEEDING
            return
        self.state = State.COMPLETED
        self.response = response
        self._retransmit = None
        self._end_at = now + (0 if self.reliable else T4)  # Timer K

    def on_timer(self, now: float) -> bytes | None:
        if self._end_at is not None and now >= self._end_at:
            self.timed_out = self.state in (State.TRYING, State.PROCEEDING)  # Timer F
            self.state = State.TERMINATED
            self._retransmit = self._end_at = None
            return None
        return self._retransmit.due(now) if self._retransmit else None


class InviteClientTransaction:
    """RFC 3261 section 17.1.1 with RFC 6026's Accepted state: our re-INVITE.

    ``on_response`` returns what to send back: the ACK for a non-2xx final response (built
    here, on the INVITE's branch, section 17.1.1.3). The ACK for a 2xx is the UA core's,
    because it belongs to the dialog, not to the transaction (section 13.2.2.4).
    """

    def __init__(self, request: Request, now: float, reliable: bool = False) -> None:
        self.request = request
        self.reliable = reliable
        self.state = State.TRYING  # "Calling"
        self.response: Response | None = None
        self.timed_out = False
        self._datagram = request.to_bytes()
        self._retransmit = None if reliable else Retransmission(self._datagram, now, cap=float("inf"))  # Timer A
        self._end_at: float | None = now + TIMEOUT  # Timer B
        self._ack: bytes | None = None

    def start(self) -> bytes:
        return self._datagram

    @property
    def deadline(self) -> float | None:
        return earliest(self._retransmit.next_at if self._retransmit else None, self._end_at)

    def on_response(self, response: Response, now: float) -> bytes | None:
        if self.state is State.COMPLETED:
            return self._ack  # a retransmitted final response: the same ACK again
        if self.state not in (State.TRYING, State.PROCEEDING):
            return None
        self._retransmit = None
        if response.status < 200:
            self.state = State.PROCEEDING
            return None
        self.response = response
        if response.status < 300:
            self.state = State.ACCEPTED
            self._end_at = now + TIMEOUT  # Timer M
            return None
        self.state = State.COMPLETED
        self._end_at = now + (0 if self.reliable else TIMER_D)
        self._ack = _ack_for(self.request, response).to_bytes()
        return self._ack

    def on_timer(self, now: float) -> bytes | None:
        if self._end_at is not None and now >= self._end_at:
            self.timed_out = self.state in (State.TRYING, State.PROCEEDING)  # Timer B
            self.state = State.TERMINATED
            self._retransmit = self._end_at = None
            return None
        return self._retransmit.due(now) if self._retransmit else None


def _ack_for(invite: Request, response: Response) -> Request:
    """Section 17.1.1.3: the ACK for a non-2xx final response, on the INVITE's branch."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.headers.get("Call-ID") or "")
    number = (invite.headers.get("CSeq") or "1").split()[0]
    headers.add("CSeq", f"{number} ACK")
    return Request("ACK", invite.uri, headers)
