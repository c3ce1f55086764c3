"""The callers' side of bench/media.py: N SIP calls with RTP both ways, on loopback.

Each call is an INVITE (PCMU and telephone-event offered), an ACK, then RTP at 50
packets per second from a shared 20 ms clock, and a BYE at the end. The answerer's RTP is
read with kernel receive timestamps (SO_TIMESTAMPNS), so what is measured is when the
answerer's packets reached the socket, not when this busy process got round to them.

The SIP socket also answers REGISTER with 200 OK, which is all a pyVoIP phone needs to
come up before it can answer calls.
"""

from __future__ import annotations

import math
import re
import socket
import struct
from dataclasses import dataclass, field

import numpy as np
import trio

FRAME_S = 0.020
SAMPLES = 160
SDP = ("v=0\r\no=bench {id} 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
       "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
_TIMESPEC = struct.Struct("@qq")
#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h); Python's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SETUP_CONCURRENCY = 10
SETUP_TIMEOUT = 15.0


@dataclass
class Leg:
    """One call as the callers see it."""

    index: int
    rtp: trio.socket.SocketType
    call_id: str
    remote: tuple[str, int] | None = None
    to_tag: str = ""
    answered: trio.Event = field(default_factory=trio.Event)
    # (kernel arrival time, sequence, timestamp, marker) of packets in the measured window
    arrivals: list[tuple[float, int, int, bool]] = field(default_factory=list)
    measuring: bool = False


@dataclass
class Figures:
    """What one run measured, over all calls."""

    calls: int
    answered: int
    packets: int
    deviation_p99_ms: float
    late_frames: int
    dropped_frames: int


def request(method: str, call_id: str, me: tuple[str, int], target: tuple[str, int], cseq: int, *,
            to_tag: str = "", body: str = "") -> bytes:
    to = f"<sip:bench@{target[0]}:{target[1]}>" + (f";tag={to_tag}" if to_tag else "")
    branch = f"z9hG4bK-{call_id}-{cseq}-{method}"
    content = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:bench@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me[0]}:{me[1]};branch={branch};rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:caller@{me[0]}>;tag=c-{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:caller@{me[0]}:{me[1]}>\r\n{content}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*?)\r$", message, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else ""


class Callers:
    """Places, feeds, measures and ends the calls; runs inside one Trio nursery."""

    def __init__(self, payloads: list[bytes], *, in_step: bool = False) -> None:
        """``in_step``: every caller plays the same frame of the script on the same tick
        (the worst case: all turns, barge-ins and replies of the answerer at once)."""
        self._in_step = in_step
        self.sip = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.legs: dict[str, Leg] = {}
        self._payloads = payloads
        self._registered = False  # a pyVoIP phone registered with us
        self._probed = False  # the answerer answered our OPTIONS

    async def bind(self) -> tuple[str, int]:
        await self.sip.bind(("127.0.0.1", 0))
        return self.sip.getsockname()

    async def serve_sip(self) -> None:
        """Answers to our INVITEs, REGISTER from pyVoIP, and BYEs and other requests."""
        while True:
            data, source = await self.sip.recvfrom(65536)
            text = data.decode(errors="replace")
            first = text.split("\r\n", 1)[0]
            if first.startswith("SIP/2.0 "):
                self._response(text, int(first.split()[1]))
            else:
                await self._answer_request(text, source)

    def ready(self, answerer: str) -> bool:
        return self._registered if answerer == "pyvoip" else self._probed

    async def probe(self, target: tuple[str, int]) -> None:
        await self.sip.sendto(request("OPTIONS", "probe", self.sip.getsockname(), target, 1), target)

    def _response(self, text: str, status: int) -> None:
        if header(text, "Call-ID") == "probe":
            self._probed = True
            return
        leg = self.legs.get(header(text, "Call-ID"))
        if leg is None or status != 200 or "INVITE" not in header(text, "CSeq") or leg.answered.is_set():
            return
        body = text.split("\r\n\r\n", 1)[1]
        address = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
        port = re.search(r"^m=audio (\d+)", body, re.MULTILINE)
        tag = re.search(r";tag=([^;>\s]+)", header(text, "To"))
        if address and port and tag:
            leg.remote = (address.group(1), int(port.group(1)))
            leg.to_tag = tag.group(1)
            leg.answered.set()

    async def _answer_request(self, text: str, source: tuple[str, int]) -> None:
        method = text.split(" ", 1)[0]
        if method == "ACK":
            return
        via = header(text, "Via")
        sent_by = re.search(r"SIP/2.0/UDP ([\d.]+):(\d+)", via)
        # pyVoIP reads replies on its listening port, which its Via names; this is a
        # loopback-only test tool, so the Via is trusted here.
        reply_to = (sent_by.group(1), int(sent_by.group(2))) if sent_by else source
        to = header(text, "To")
        to += "" if ";tag=" in to else ";tag=bench"
        extra = ""
        if method == "REGISTER":
            extra = f"Contact: {header(text, 'Contact')}\r\nExpires: 3600\r\n"
            self._registered = True
        ok = (f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {header(text, 'From')}\r\nTo: {to}\r\n"
              f"Call-ID: {header(text, 'Call-ID')}\r\nCSeq: {header(text, 'CSeq')}\r\n{extra}"
              "Content-Length: 0\r\n\r\n").encode()
        await self.sip.sendto(ok, reply_to)

    async def place(self, count: int, target: tuple[str, int]) -> None:
        """Set up ``count`` calls, a few at a time, like a busy trunk."""
        limit = trio.Semaphore(SETUP_CONCURRENCY)
        me = self.sip.getsockname()

        async def one(index: int) -> None:
            async with limit:
                rtp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                await rtp.bind(("127.0.0.1", 0))
                rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                leg = Leg(index, rtp, f"bench-{index}-{id(self)}")
                self.legs[leg.call_id] = leg
                invite = request("INVITE", leg.call_id, me, target, 1,
                                 body=SDP.format(id=index, port=rtp.getsockname()[1]))
                with trio.move_on_after(SETUP_TIMEOUT):
                    while not leg.answered.is_set():
                        await self.sip.sendto(invite, target)
                        with trio.move_on_after(2.0):
                            await leg.answered.wait()
                if leg.answered.is_set():
                    ack = request("ACK", leg.call_id, me, target, 1, to_tag=leg.to_tag)
                    await self.sip.sendto(ack, target)

        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index)

    async def media(self) -> None:
        """RTP to every answered call from one drift-free 20 ms clock, and readers."""
        async with trio.open_nursery() as nursery:
            for leg in self.legs.values():
                if leg.answered.is_set():
                    nursery.start_soon(self._read, leg)
            ssrc, tick, start = 0x0BE4C4, 0, trio.current_time()
            # Each caller is at its own point of the script, spread evenly over it:
            # callers of a real trunk do not all start and stop talking on the same 20 ms
            # (which would make every barge-in, end of turn and reply of the answerer
            # land on one tick).
            script = len(self._payloads)
            offsets = {leg.call_id: 0 if self._in_step else leg.index * script // len(self.legs)
                       for leg in self.legs.values()}
            while True:
                for leg in self.legs.values():
                    if leg.remote is None:
                        continue
                    payload = self._payloads[(tick + offsets[leg.call_id]) % script]
                    packet = struct.pack("!BBHII", 0x80, 0, tick & 0xFFFF, (tick * SAMPLES) & 0xFFFFFFFF,
                                         ssrc + leg.index) + payload
                    try:
                        await leg.rtp.sendto(packet, leg.remote)
                    except OSError:
                        pass
                tick += 1
                await trio.sleep_until(start + tick * FRAME_S)

    async def _read(self, leg: Leg) -> None:
        space = socket.CMSG_SPACE(_TIMESPEC.size)
        while True:
            data, ancillary, _, _ = await leg.rtp.recvmsg(2048, space)
            if not leg.measuring or len(data) < 12 or data[1] & 0x7F != 0:
                continue
            arrival = next((_TIMESPEC.unpack(cdata[:_TIMESPEC.size]) for level, kind, cdata in ancillary
                            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            if arrival is None:
                continue
            sequence, timestamp = struct.unpack_from("!HI", data, 2)
            leg.arrivals.append((arrival[0] + arrival[1] / 1e9, sequence, timestamp, bool(data[1] & 0x80)))

    def measure(self, on: bool) -> None:
        for leg in self.legs.values():
            leg.measuring = on

    async def hang_up(self, target: tuple[str, int]) -> None:
        me = self.sip.getsockname()
        for leg in self.legs.values():
            if leg.answered.is_set():
                await self.sip.sendto(request("BYE", leg.call_id, me, target, 2, to_tag=leg.to_tag), target)
        await trio.sleep(0.5)

    def close(self) -> None:
        """After the tasks using them are done."""
        self.sip.close()
        for leg in self.legs.values():
            leg.rtp.close()

    def figures(self) -> Figures:
        """Send-interval deviation from 20 ms between consecutive packets of continuous
        audio (timestamps 160 apart), frames later than a whole frame, and sequence gaps."""
        deviations: list[float] = []
        late = dropped = packets = 0
        for leg in self.legs.values():
            arrivals = sorted(leg.arrivals, key=lambda a: a[0])
            packets += len(arrivals)
            for (t0, s0, ts0, _), (t1, s1, ts1, marker) in zip(arrivals, arrivals[1:]):
                gap = (s1 - s0) % 65536
                if gap > 1 and gap < 1000:
                    dropped += gap - 1
                if gap == 1 and (ts1 - ts0) % (1 << 32) == SAMPLES and not marker:
                    deviation = abs((t1 - t0) - FRAME_S) * 1000
                    deviations.append(deviation)
                    late += deviation > FRAME_S * 1000
        p99 = float(np.percentile(deviations, 99)) if deviations else math.nan
        answered = sum(leg.answered.is_set() for leg in self.legs.values())
        return Figures(len(self.legs), answered, packets, p99, late, dropped)
