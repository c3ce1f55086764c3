"""AudioSocket framing: round trips, split delivery, malformed input, EOF."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipgw.audiosocket.protocol import (
    AUDIO_KINDS,
    CLOSED,
    MAX_PAYLOAD,
    NEED_DATA,
    Audio,
    AudioSocketError,
    Connection,
    Dtmf,
    Error,
    Event,
    Hangup,
    Kind,
    Signal,
    Uuid,
)

CALL_ID = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")


def events_from(data: bytes, *, eof: bool = True) -> list[Event | Signal]:
    """Feed ``data`` (then EOF) in one piece; collect events up to the first signal."""
    conn = Connection()
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    out: list[Event | Signal] = []
    while True:
        event = conn.next_event()
        out.append(event)
        if isinstance(event, Signal):
            return out


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def test_kinds_match_asterisk() -> None:
    # include/asterisk/res_audiosocket.h, enum ast_audiosocket_msg_kind
    assert (Kind.HANGUP, Kind.UUID, Kind.DTMF, Kind.AUDIO, Kind.ERROR) == (0, 1, 3, 0x10, 0xFF)
    assert [AUDIO_KINDS[r] for r in (12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000)] == [
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
    ]


def test_wire_bytes() -> None:
    conn = Connection()
    assert conn.send(Hangup()) == b"\x00\x00\x00"
    assert conn.send(Uuid(CALL_ID)) == b"\x01\x00\x10" + CALL_ID.bytes
    assert conn.send(Dtmf("#")) == b"\x03\x00\x01#"
    assert conn.send(Audio(b"\x01\x02" * 160)) == b"\x10\x01\x40" + b"\x01\x02" * 160
    assert conn.send(Audio(b"\x00\x00", 16000)) == b"\x12\x00\x02\x00\x00"
    assert conn.send(Error()) == b"\xff\x00\x00"
    assert conn.send(Error(0x02)) == b"\xff\x00\x01\x02"


def test_a_call_as_asterisk_sends_it() -> None:
    data = (
        frame(0x01, CALL_ID.bytes)
        + frame(0x10, bytes(320))
        + frame(0x10, bytes(480))  # 30 ms packetisation: never assume 320
        + frame(0x03, b"5")
        + frame(0x00, b"")
    )
    assert events_from(data) == [
        Uuid(CALL_ID),
        Audio(bytes(320)),
        Audio(bytes(480)),
        Dtmf("5"),
        Hangup(),
        CLOSED,
    ]


ALL_EVENTS: list[Event] = [
    Uuid(CALL_ID),
    Audio(b"\x10\x20" * 240),
    Audio(b"\x01\x00" * 320, 16000),
    Audio(b"\xff\x7f" * 1, 48000),
    Dtmf("0"),
    Dtmf("*"),
    Dtmf("D"),
    Error(),
    Error(0x04),
]


def test_round_trip_in_one_chunk() -> None:
    sender = Connection()
    data = b"".join(sender.send(event) for event in ALL_EVENTS)
    assert events_from(data, eof=False) == [*ALL_EVENTS, NEED_DATA]


def test_round_trip_one_byte_at_a_time() -> None:
    sender, receiver = Connection(), Connection()
    data = b"".join(sender.send(event) for event in [*ALL_EVENTS, Hangup()])
    received: list[Event | Signal] = []
    for i in range(len(data)):
        receiver.receive_data(data[i : i + 1])
        while (event := receiver.next_event()) is not NEED_DATA:
            received.append(event)
            if event is CLOSED:
                break
    assert received == [*ALL_EVENTS, Hangup(), CLOSED]


def test_need_data_until_the_frame_is_complete() -> None:
    conn = Connection()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\x10\x00")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\x04\x01\x00")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\x02\x00")
    assert conn.next_event() == Audio(b"\x01\x00\x02\x00")
    assert conn.next_event() is NEED_DATA


def test_clean_eof_is_closed() -> None:
    assert events_from(frame(0x10, bytes(320))) == [Audio(bytes(320)), CLOSED]
    assert events_from(b"") == [CLOSED]


def test_closed_stays_closed() -> None:
    conn = Connection()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED
    with pytest.raises(RuntimeError, match="after EOF"):
        conn.receive_data(b"\x00\x00\x00")


def test_bytes_after_a_hangup_are_ignored() -> None:
    conn = Connection()
    conn.receive_data(frame(0x00, b"") + frame(0x10, bytes(320)) + b"\xee")
    assert conn.next_event() == Hangup()
    conn.receive_data(b"garbage")
    assert conn.next_event() is CLOSED
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


@pytest.mark.parametrize(
    "data",
    [
        b"\x10",  # inside the header
        b"\x10\x01",
        b"\x10\x01\x40" + bytes(100),  # inside the payload
        frame(0x10, bytes(320)) + b"\x10\x01\x40",
    ],
)
def test_eof_inside_a_frame_is_an_error(data: bytes) -> None:
    conn = Connection()
    conn.receive_data(data)
    conn.receive_data(b"")
    if data.startswith(frame(0x10, bytes(320))):
        assert conn.next_event() == Audio(bytes(320))
    with pytest.raises(AudioSocketError, match="closed inside a message"):
        conn.next_event()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (frame(0x02, b"\x01\x35\x00\x00\x00\x00"), "unknown message kind 0x02"),
        (frame(0x20, b""), "unknown message kind 0x20"),
        (frame(0x01, CALL_ID.bytes[:15]), "UUID payload of 15 bytes"),
        (frame(0x01, CALL_ID.bytes + b"\x00"), "UUID payload of 17 bytes"),
        (frame(0x03, b"E"), "DTMF digit 'E'"),
        (frame(0x03, b"a"), "DTMF digit 'a'"),
        (frame(0x03, b"\xb5"), "DTMF digit"),
        (frame(0x03, b""), "DTMF payload of 0 bytes"),
        (frame(0x03, b"12"), "DTMF payload of 2 bytes"),
        (frame(0x10, bytes(321)), "not whole 16-bit samples"),
        (frame(0x12, b"\x00"), "not whole 16-bit samples"),
        (frame(0x10, b""), "without samples"),
        (frame(0x00, b"\x01"), "hangup message carries 1 payload bytes"),
        (frame(0xFF, b"\x01\x02"), "error payload of 2 bytes"),
    ],
)
def test_malformed_frames(data: bytes, message: str) -> None:
    conn = Connection()
    conn.receive_data(data)
    with pytest.raises(AudioSocketError, match=message):
        conn.next_event()


def test_oversized_payload_is_refused_from_the_header_alone() -> None:
    conn = Connection()
    conn.receive_data(b"\x10" + (MAX_PAYLOAD + 2).to_bytes(2, "big"))
    with pytest.raises(AudioSocketError, match="exceeds"):
        conn.next_event()


def test_largest_payload_is_accepted() -> None:
    assert events_from(frame(0x10, bytes(MAX_PAYLOAD))) == [Audio(bytes(MAX_PAYLOAD)), CLOSED]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Audio(b""), "without samples"),
        (lambda: Audio(b"\x00"), "16-bit samples"),
        (lambda: Audio(b"\x00\x00", 11025), "11025 Hz"),
        (lambda: Dtmf("x"), "DTMF digit"),
        (lambda: Dtmf("12"), "DTMF digit"),
        (lambda: Error(256), "one byte"),
    ],
)
def test_events_are_validated_when_built(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_send_refuses_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError, match="split it"):
        Connection().send(Audio(bytes(MAX_PAYLOAD + 2)))
    with pytest.raises(TypeError, match="not an AudioSocket event"):
        Connection().send("hello")  # type: ignore[arg-type]


def test_send_after_hangup_still_frames() -> None:
    # A pacer tick may race the hangup; the adapter drops the bytes, send never fails.
    conn = Connection()
    conn.send(Hangup())
    assert conn.send(Audio(bytes(2))) == b"\x10\x00\x02\x00\x00"


events = st.one_of(
    st.builds(Uuid, st.uuids()),
    st.builds(
        Audio,
        st.binary(min_size=1, max_size=200).map(lambda b: b + b),
        st.sampled_from(sorted(AUDIO_KINDS)),
    ),
    st.builds(Dtmf, st.sampled_from("0123456789*#ABCD")),
    st.builds(Error, st.none() | st.integers(0, 255)),
)


@given(st.lists(events, max_size=12), st.lists(st.integers(0, 4000), max_size=8))
def test_any_split_gives_the_same_events(sent: list[Event], cuts: list[int]) -> None:
    data = b"".join(Connection().send(event) for event in sent) + b"\x00\x00\x00"
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    conn = Connection()
    received: list[Event | Signal] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        conn.receive_data(data[a:b])
        while (event := conn.next_event()) is not NEED_DATA and event is not CLOSED:
            received.append(event)
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    assert received == [*sent, Hangup()]


@given(st.binary(max_size=64))
def test_garbage_raises_only_audiosocket_error(data: bytes) -> None:
    conn = Connection()
    conn.receive_data(data)
    conn.receive_data(b"")
    try:
        while conn.next_event() is not CLOSED:
            pass
    except AudioSocketError:
        pass
