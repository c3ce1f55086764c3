"""Asterisk AudioSocket framing, sans-IO in the manner of h11.

Every message is a three-byte header and a payload::

    +--------+--------+--------+----------------------+
    |  kind  |  payload length | payload (length B)   |
    | uint8  |  uint16, big-endian                    |
    +--------+--------+--------+----------------------+

The kinds are Asterisk's ``enum ast_audiosocket_msg_kind`` in
include/asterisk/res_audiosocket.h; the sending and parsing rules are those of
res/res_audiosocket.c (``ast_audiosocket_init``, ``ast_audiosocket_send_frame``,
``ast_audiosocket_receive_frame_with_hangup``). Asterisk sends the UUID first, then audio
and DTMF; it accepts only hangup and audio back, and rejects a zero-length audio message.

Audio frames are as long as the channel's packetisation makes them (320 bytes for 20 ms
at 8 kHz, 480 for 30 ms), so nothing here assumes a size.

:class:`Connection` takes bytes with :meth:`Connection.receive_data`, yields events from
:meth:`Connection.next_event` and turns events into bytes with :meth:`Connection.send`.
It does no I/O: the Trio adapter owns the socket.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass
from media.audio import SAMPLE_WIDTH

HEADER = struct.Struct("!BH")
UUID_SIZE = 16  # binary UUID, as uuid_parse() fills it in ast_audiosocket_init
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# The longest audio message Asterisk builds is 60 ms (slin's maximum_ms in
# main/codec_builtin.c) at 192 kHz: 23,040 bytes. A length beyond 32 KiB can only come
# from a desynchronised or hostile stream, so it is rejected before buffering it.
MAX_PAYLOAD = 32 * 1024


class Kind(enum.IntEnum):
    """Message kinds, from ``enum ast_audiosocket_msg_kind`` (res_audiosocket.h)."""

    HANGUP = 0x00  # no payload; closing the socket means the same
    UUID = 0x01  # 16-byte binary UUID identifying the call; Asterisk sends it first
    DTMF = 0x03  # one ASCII digit
    AUDIO = 0x10  # signed linear 16-bit little-endian mono, 8 kHz
    AUDIO_SLIN12 = 0x11  # the same at 12 kHz (channel driver with a wideband codec)
    AUDIO_SLIN16 = 0x12
    AUDIO_SLIN24 = 0x13
    AUDIO_SLIN32 = 0x14
    AUDIO_SLIN44 = 0x15
    AUDIO_SLIN48 = 0x16
    AUDIO_SLIN96 = 0x17
    AUDIO_SLIN192 = 0x18
    ERROR = 0xFF  # optional one-byte application-specific error code


AUDIO_KINDS: dict[int, Kind] = {
    8000: Kind.AUDIO,
    12000: Kind.AUDIO_SLIN12,
    16000: Kind.AUDIO_SLIN16,
    24000: Kind.AUDIO_SLIN24,
    32000: Kind.AUDIO_SLIN32,
    44100: Kind.AUDIO_SLIN44,
    48000: Kind.AUDIO_SLIN48,
    96000: Kind.AUDIO_SLIN96,
    192000: Kind.AUDIO_SLIN192,
}
AUDIO_RATES: dict[Kind, int] = {kind: rate for rate, kind in AUDIO_KINDS.items()}
_KNOWN_KINDS = frozenset(kind.value for kind in Kind)


class AudioSocketError(Exception):
    """The peer sent a malformed message; the connection cannot continue."""


@dataclass(frozen=True)
class Uuid:
    """The call's identifier, the first message Asterisk sends."""

    value: uuid.UUID


@dataclass(frozen=True)
class Audio:
    """A chunk of s16le mono PCM at ``rate`` Hz (8000 from the dialplan application)."""

    pcm: bytes
    rate: int = 8000

    def __post_init__(self) -> None:
        if self.rate not in AUDIO_KINDS:
            raise ValueError(f"AudioSocket has no audio kind for {self.rate} Hz")
        # res_audiosocket.c rejects a message of length < 1 and ends the call.
        if not self.pcm:
            raise ValueError("audio message without samples")
        if len(self.pcm) % SAMPLE_WIDTH:
            raise ValueError(f"audio of {len(self.pcm)} bytes is not whole 16-bit samples")


@dataclass(frozen=True)
class Dtmf:
    """One DTMF digit the caller pressed."""

    digit: str

    def __post_init__(self) -> None:
        if self.digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit {self.digit!r} is not one of 0-9 * # A-D")


@dataclass(frozen=True)
class Hangup:
    """The other side ends the call."""


@dataclass(frozen=True)
class Error:
    """The other side reports an error. Asterisk's codes are bit flags, listed by the
    protocol's author (CyCoreSystems/audiosocket README): 0x01 caller hung up, 0x02 frame
    forwarding error, 0x04 memory allocation error."""

    code: int | None = None

    def __post_init__(self) -> None:
        if self.code is not None and not 0 <= self.code <= 0xFF:
            raise ValueError(f"error code {self.code} does not fit one byte")


Event = Uuid | Audio | Dtmf | Hangup | Error


class Signal(enum.Enum):
    """What :meth:`Connection.next_event` returns when it has no event."""

    NEED_DATA = "NEED_DATA"  # feed more bytes with receive_data()
    CLOSED = "CLOSED"  # the peer hung up or closed the stream; nothing more will come


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


class Connection:
    """One AudioSocket stream, either end.

    Receiving: feed every chunk read from the socket to :meth:`receive_data`, ``b""``
    at EOF, then call :meth:`next_event` until it returns :data:`NEED_DATA`. A
    :class:`Hangup` message or a clean EOF leads to :data:`CLOSED`; bytes after a hangup
    are ignored. Malformed input raises :class:`AudioSocketError`.

    Sending: :meth:`send` returns the bytes for an event and keeps no state, so a pacer
    tick racing a hangup cannot fail; the adapter closes the socket after a Hangup.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._closed = False  # hangup seen or EOF reached

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed it."""
        if not data:
            self._eof = True
        elif self._eof:
            raise RuntimeError("received data after EOF")
        elif not self._closed:
            self._buffer += data

    def next_event(self) -> Event | Signal:
        """The next complete message as an event, or why there is none."""
        if self._closed:
            return CLOSED
        if len(self._buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buffer)
            if kind not in _KNOWN_KINDS:
                raise AudioSocketError(f"unknown message kind 0x{kind:02x}")
            if length > MAX_PAYLOAD:
                raise AudioSocketError(f"payload length {length} exceeds {MAX_PAYLOAD} bytes")
            end = HEADER.size + length
            if len(self._buffer) >= end:
                payload = bytes(self._buffer[HEADER.size : end])
                del self._buffer[:end]
                event = _decode(Kind(kind), payload)
                if isinstance(event, Hangup):
                    self._closed = True
                    self._buffer.clear()
                return event
        if not self._eof:
            return NEED_DATA
        if self._buffer:
            raise AudioSocketError(
                f"stream closed inside a message ({len(self._buffer)} bytes left over)"
            )
        self._closed = True
        return CLOSED

    def send(self, event: Event) -> bytes:
        """Serialise ``event``. Asterisk itself accepts only :class:`Audio` and
        :class:`Hangup`; the other kinds are for playing Asterisk's part (tests, tools)."""
        kind, payload = _encode(event)
        return HEADER.pack(kind, len(payload)) + payload


def _encode(event: Event) -> tuple[Kind, bytes]:
    if isinstance(event, Audio):
        if len(event.pcm) > MAX_PAYLOAD:
            raise ValueError(f"audio of {len(event.pcm)} bytes exceeds {MAX_PAYLOAD}; split it")
        return AUDIO_KINDS[event.rate], event.pcm
    if isinstance(event, Hangup):
        return Kind.HANGUP, b""
    if isinstance(event, Uuid):
        return Kind.UUID, event.value.bytes
    if isinstance(event, Dtmf):
        return Kind.DTMF, event.digit.encode("ascii")
    if isinstance(event, Error):
        return Kind.ERROR, b"" if event.code is None else bytes([event.code])
    raise TypeError(f"not an AudioSocket event: {event!r}")


def _decode(kind: Kind, payload: bytes) -> Event:
    """Build the event for one complete message, turning a bad payload into the peer's
    error rather than ours."""
    try:
        if kind in AUDIO_RATES:
            return Audio(payload, AUDIO_RATES[kind])
        if kind is Kind.HANGUP:
            if payload:
                raise ValueError(f"hangup message carries {len(payload)} payload bytes")
            return Hangup()
        if kind is Kind.UUID:
            if len(payload) != UUID_SIZE:
                raise ValueError(f"UUID payload of {len(payload)} bytes, expected {UUID_SIZE}")
            return Uuid(uuid.UUID(bytes=payload))
        if kind is Kind.DTMF:
            if len(payload) != 1:
                raise ValueError(f"DTMF payload of {len(payload)} bytes, expected 1")
            return Dtmf(payload.decode("latin-1"))
        # Kind.ERROR, the only kind left
        if len(payload) > 1:
            raise ValueError(f"error payload of {len(payload)} bytes, expected at most 1")
        return Error(payload[0] if payload else None)
    except ValueError as exc:
        raise AudioSocketError(f"malformed {kind.name} message: {exc}") from exc
