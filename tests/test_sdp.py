"""SDP offer/answer with plain data (RFC 4566, RFC 3264, RFC 3551)."""

from __future__ import annotations

import pytest

from sipgw.sip.sdp import NotAcceptable, SdpError, answer_offer, parse_sdp

ASTERISK_OFFER = b"""v=0\r
o=- 1847 1847 IN IP4 192.0.2.10\r
s=Asterisk\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 14380 RTP/AVP 8 0 3 101\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:3 GSM/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=maxptime:150\r
a=sendrecv\r
"""

LINPHONE_OFFER = b"""v=0\r
o=alice 123 456 IN IP6 2001:db8::5\r
s=Talk\r
t=0 0\r
m=audio 7078 RTP/AVP 96 97 0 101\r
c=IN IP6 2001:db8::5\r
a=rtpmap:96 opus/48000/2\r
a=rtpmap:97 speex/16000\r
a=rtpmap:101 telephone-event/48000\r
a=ptime:30\r
m=video 9078 RTP/AVP 98\r
c=IN IP6 2001:db8::5\r
a=rtpmap:98 VP8/90000\r
"""


def answer(offer: bytes, **kwargs):
    options = {"local_address": "198.51.100.7", "rtp_port": 10002, "session_id": 42}
    options.update(kwargs)
    body, negotiated = answer_offer(parse_sdp(offer), **options)
    return parse_sdp(body), negotiated, body


def test_our_preference_wins_among_offered_codecs():
    sdp, negotiated, body = answer(ASTERISK_OFFER)
    assert negotiated.codec == "PCMU" and negotiated.payload_type == 0
    assert (negotiated.remote_address, negotiated.remote_port) == ("192.0.2.10", 14380)
    assert negotiated.telephone_event_pt == 101 and negotiated.ptime == 20
    (media,) = sdp.media
    assert (media.port, media.formats) == (10002, ["0", "101"])
    assert ("fmtp", "101 0-16") in media.attributes and ("sendrecv", None) in media.attributes
    assert sdp.connection == "198.51.100.7"
    assert b"o=trivox 42 1 IN IP4 198.51.100.7\r\n" in body


def test_preference_order_is_configurable():
    _, negotiated, _ = answer(ASTERISK_OFFER, codecs=["PCMA", "PCMU"])
    assert negotiated.codec == "PCMA" and negotiated.payload_type == 8


def test_same_mline_count_and_other_streams_rejected_with_port_0():
    offer = ASTERISK_OFFER + b"m=video 9000 RTP/AVP 31\r\n"
    sdp, _, _ = answer(offer)
    assert [(m.media, m.port) for m in sdp.media] == [("audio", 10002), ("video", 0)]


def test_no_common_codec_is_not_acceptable():
    with pytest.raises(NotAcceptable):
        answer(LINPHONE_OFFER.replace(b"96 97 0 101", b"96 97 101"))  # opus and speex only


def test_static_pcmu_without_rtpmap_is_taken():
    _, negotiated, _ = answer(LINPHONE_OFFER)
    assert negotiated.codec == "PCMU" and negotiated.payload_type == 0


def test_dynamic_payload_type_for_g711_and_ipv6():
    offer = LINPHONE_OFFER.replace(b"96 97 0 101", b"96 97 110 101").replace(
        b"a=rtpmap:96 opus/48000/2\r\n", b"a=rtpmap:96 opus/48000/2\r\na=rtpmap:110 PCMA/8000\r\n")
    sdp, negotiated, _ = answer(offer, local_address="2001:db8::7")
    assert negotiated.codec == "PCMA" and negotiated.payload_type == 110
    assert negotiated.telephone_event_pt is None  # offered only at 48 kHz
    assert negotiated.remote_address == "2001:db8::5" and negotiated.ptime == 30
    assert sdp.connection == "2001:db8::7" and [m.port for m in sdp.media] == [10002, 0]


@pytest.mark.parametrize(("offered", "answered"),
                         [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")])
def test_direction_is_answered_per_rfc3264(offered, answered):
    sdp, negotiated, _ = answer(ASTERISK_OFFER.replace(b"a=sendrecv", f"a={offered}".encode()))
    assert negotiated.direction == offered
    assert (answered, None) in sdp.media[0].attributes


def test_port_zero_stream_is_not_taken():
    with pytest.raises(NotAcceptable):
        answer(ASTERISK_OFFER.replace(b"m=audio 14380", b"m=audio 0"))


@pytest.mark.parametrize("body", [b"", b"hello", b"v=0\r\nm=audio x RTP/AVP 0\r\n", b"v=0\r\nc=IN IP4\r\n",
                                  b"\xff\xfe"])
def test_garbage_is_an_sdp_error(body):
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_missing_connection_address_is_not_acceptable():
    with pytest.raises(NotAcceptable):
        answer(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
