"""SDP offer/answer with plain data (RFC 4566, RFC 3264, RFC 3551, RFC 4733)."""

from __future__ import annotations

import pytest

from sipgw.sip.sdp import (
    MediaDescription,
    NotAcceptable,
    Origin,
    SdpError,
    SessionDescription,
    answer_offer,
    make_offer,
    parse_sdp,
    read_answer,
)

# What Asterisk (chan_pjsip) offers in an INVITE: PCMA first, GSM, RFC 4733 events.
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

# Linphone-like: IPv6, media-level c=, dynamic payload types, events at two rates, video.
LINPHONE_OFFER = b"""v=0\r
o=alice 123 456 IN IP6 2001:db8::5\r
s=Talk\r
t=0 0\r
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r
m=audio 7078 RTP/AVP 96 97 0 8 101 100\r
c=IN IP6 2001:db8::5\r
a=rtpmap:96 opus/48000/2\r
a=fmtp:96 useinbandfec=1\r
a=rtpmap:97 speex/16000\r
a=rtpmap:101 telephone-event/48000\r
a=rtpmap:100 telephone-event/8000\r
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


def test_parse_keeps_what_answering_needs():
    sdp = parse_sdp(ASTERISK_OFFER)
    assert sdp.origin == Origin("-", "1847", "1847", "IN", "IP4", "192.0.2.10")
    assert (sdp.version, sdp.session_name, sdp.connection, sdp.timing) == ("0", "Asterisk", "192.0.2.10", "0 0")
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 14380, "RTP/AVP", ["8", "0", "3", "101"])
    assert audio.connection is None
    assert audio.attribute("ptime") == ["20"] and ("sendrecv", None) in audio.attributes
    assert audio.rtpmap() == {"8": ("PCMA", 8000), "0": ("PCMU", 8000), "3": ("GSM", 8000),
                              "101": ("telephone-event", 8000)}


def test_serialize_round_trip():
    sdp = parse_sdp(LINPHONE_OFFER)
    again = parse_sdp(sdp.to_bytes())
    assert again == sdp
    assert sdp.to_bytes().count(b"\r\n") == len(sdp.to_bytes().splitlines())


def test_asterisk_offer_our_preference_wins():
    sdp, negotiated, body = answer(ASTERISK_OFFER)
    assert (negotiated.codec, negotiated.payload_type, negotiated.clock_rate) == ("PCMU", 0, 8000)
    assert (negotiated.remote_address, negotiated.remote_port) == ("192.0.2.10", 14380)
    assert (negotiated.telephone_event_pt, negotiated.ptime, negotiated.direction) == (101, 20, "sendrecv")
    (media,) = sdp.media
    assert (media.port, media.proto, media.formats) == (10002, "RTP/AVP", ["0", "101"])
    assert media.attributes == [("rtpmap", "0 PCMU/8000"), ("rtpmap", "101 telephone-event/8000"),
                                ("fmtp", "101 0-16"), ("ptime", "20"), ("sendrecv", None)]
    assert sdp.connection == "198.51.100.7"
    assert b"o=trivox 42 1 IN IP4 198.51.100.7\r\n" in body
    assert body.startswith(b"v=0\r\no=") and body.endswith(b"\r\n")


def test_preference_order_is_ours_not_the_offers():
    _, negotiated, _ = answer(ASTERISK_OFFER, codecs=["PCMA", "PCMU"])
    assert negotiated.codec == "PCMA" and negotiated.payload_type == 8
    _, negotiated, _ = answer(ASTERISK_OFFER, codecs=["pcmu"])
    assert negotiated.codec == "PCMU"


def test_linphone_offer_with_dynamic_types_and_ipv6():
    sdp, negotiated, body = answer(LINPHONE_OFFER, local_address="2001:db8::7", session_version=3)
    assert (negotiated.codec, negotiated.payload_type) == ("PCMU", 0)
    assert negotiated.telephone_event_pt == 100  # the 8 kHz one; the 48 kHz one belongs to opus
    assert (negotiated.remote_address, negotiated.remote_port, negotiated.ptime) == ("2001:db8::5", 7078, 30)
    assert [(m.media, m.port) for m in sdp.media] == [("audio", 10002), ("video", 0)]
    assert sdp.media[0].formats == ["0", "100"] and ("fmtp", "100 0-16") in sdp.media[0].attributes
    assert b"o=trivox 42 3 IN IP6 2001:db8::7\r\nc=IN IP6 2001:db8::7\r\n" in body.replace(b"s=trivox\r\n", b"")


def test_dynamic_payload_type_for_g711():
    offer = LINPHONE_OFFER.replace(b"96 97 0 8 101 100", b"96 97 110 101").replace(
        b"a=rtpmap:97 speex/16000\r\n", b"a=rtpmap:97 speex/16000\r\na=rtpmap:110 pcma/8000\r\n")
    sdp, negotiated, _ = answer(offer)
    assert (negotiated.codec, negotiated.payload_type) == ("PCMA", 110)
    assert negotiated.telephone_event_pt is None  # offered only at 48 kHz (RFC 4733 section 7.1.1)
    assert sdp.media[0].formats == ["110"] and ("rtpmap", "110 PCMA/8000") in sdp.media[0].attributes


def test_same_mline_count_in_order_with_others_rejected_at_port_0():
    offer = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             b"m=video 9000 RTP/AVP 31\r\n"
             b"m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"
             b"m=audio 0 RTP/AVP 0\r\n"
             b"m=audio 4002 RTP/AVP 3\r\n"
             b"m=audio 4004 RTP/AVP 8\r\n"
             b"m=audio 4006 RTP/AVP 0\r\n"
             b"m=application 5000 UDP/BFCP *\r\n")
    sdp, negotiated, _ = answer(offer)
    assert [(m.media, m.port, m.proto) for m in sdp.media] == [
        ("video", 0, "RTP/AVP"), ("audio", 0, "RTP/SAVP"), ("audio", 0, "RTP/AVP"), ("audio", 0, "RTP/AVP"),
        ("audio", 10002, "RTP/AVP"), ("audio", 0, "RTP/AVP"), ("application", 0, "UDP/BFCP")]
    assert (negotiated.codec, negotiated.remote_port) == ("PCMA", 4004)  # the first usable stream
    assert sdp.media[0].formats == ["31"]  # a rejected stream still lists a format (RFC 3264 section 6)


@pytest.mark.parametrize(("offered", "answered"),
                         [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive"),
                          ("sendrecv", "sendrecv")])
def test_direction_is_answered_per_rfc3264_section_6_1(offered, answered):
    sdp, negotiated, _ = answer(ASTERISK_OFFER.replace(b"a=sendrecv", f"a={offered}".encode()))
    assert (negotiated.direction, negotiated.answer_direction) == (offered, answered)
    assert (answered, None) in sdp.media[0].attributes


def test_session_level_direction_applies_unless_the_media_says_otherwise():
    on_hold = ASTERISK_OFFER.replace(b"a=sendrecv\r\n", b"").replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert answer(on_hold)[1].answer_direction == "recvonly"
    overridden = on_hold + b"a=inactive\r\n"
    assert answer(overridden)[1].direction == "inactive"
    assert answer(ASTERISK_OFFER.replace(b"a=sendrecv\r\n", b""))[1].direction == "sendrecv"


def test_no_common_codec_is_not_acceptable():
    with pytest.raises(NotAcceptable):
        answer(LINPHONE_OFFER.replace(b"96 97 0 8 101 100", b"96 97 101"))  # opus and speex only
    with pytest.raises(NotAcceptable):
        answer(ASTERISK_OFFER.replace(b" 8 0 3 ", b" 3 "))  # GSM only


def test_g711_at_another_rate_is_not_g711():
    with pytest.raises(NotAcceptable):
        answer(LINPHONE_OFFER.replace(b"96 97 0 8 101 100", b"96 110").replace(
            b"a=rtpmap:97 speex/16000", b"a=rtpmap:110 PCMU/16000"))


@pytest.mark.parametrize("change", [(b"m=audio 14380", b"m=audio 0"), (b"RTP/AVP", b"RTP/SAVP"),
                                    (b"m=audio", b"m=video"), (b"c=IN IP4 192.0.2.10\r\n", b"")])
def test_streams_we_cannot_take(change):
    with pytest.raises(NotAcceptable):
        answer(ASTERISK_OFFER.replace(*change))


def test_media_level_connection_overrides_session_level():
    offer = ASTERISK_OFFER.replace(b"a=sendrecv\r\n", b"a=sendrecv\r\nc=IN IP4 203.0.113.9/127\r\n")
    assert answer(offer)[1].remote_address == "203.0.113.9"


def test_rtp_avpf_is_answered_in_kind():
    sdp, _, _ = answer(ASTERISK_OFFER.replace(b"RTP/AVP", b"RTP/AVPF"))
    assert sdp.media[0].proto == "RTP/AVPF"


def test_unknown_codec_in_our_preferences_is_our_error():
    with pytest.raises(ValueError, match="G729"):
        answer(ASTERISK_OFFER, codecs=["G729"])


def test_an_offer_without_streams_is_not_acceptable():
    with pytest.raises(NotAcceptable):
        answer(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n")


def test_lf_line_ends_and_missing_s_and_t_are_accepted():
    sdp = parse_sdp(b"v=0\no=- 1 1 IN IP4 192.0.2.1\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0\n")
    assert sdp.session_name == "-" and sdp.timing == "0 0" and sdp.media[0].port == 4000


@pytest.mark.parametrize("body", [
    b"",
    b"hello",
    b"\xff\xfe",
    b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
    b"v=0\r\ns=no origin\r\n",
    b"v=0\r\no=- 1 1 IN IP4\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio x RTP/AVP 0\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 70000 RTP/AVP 0\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=ATM NSAP 47.0091\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nnot a line\r\n",
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nab=c\r\n",
])
def test_garbage_is_an_sdp_error(body):
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_building_an_answer_by_hand():
    sdp = SessionDescription(Origin("me", "1", "2", "IN", "IP4", "192.0.2.1"),
                             media=[MediaDescription("audio", 4000, "RTP/AVP", ["0"], "192.0.2.2", [("sendonly", None)])])
    assert sdp.to_bytes() == (b"v=0\r\no=me 1 2 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
                              b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\na=sendonly\r\n")


def test_our_offer_and_the_answer_to_it():
    offer = make_offer(local_address="192.0.2.5", rtp_port=12000, codecs=["PCMU", "PCMA"], session_id=7)
    parsed = parse_sdp(offer)
    (m,) = parsed.media
    assert (m.port, m.formats) == (12000, ["0", "8", "101"]) and parsed.connection == "192.0.2.5"
    assert m.rtpmap() == {"0": ("PCMU", 8000), "8": ("PCMA", 8000), "101": ("telephone-event", 8000)}
    # a peer that prefers A-law answers our offer; we read what it agreed
    answer, _ = answer_offer(parsed, local_address="198.51.100.9", rtp_port=40000, codecs=["PCMA"], session_id=1)
    agreed = read_answer(parse_sdp(answer), ["PCMU", "PCMA"])
    assert (agreed.codec, agreed.payload_type, agreed.remote_address, agreed.remote_port) == \
        ("PCMA", 8, "198.51.100.9", 40000)
    assert agreed.telephone_event_pt == 101


def test_an_answer_that_rejects_our_stream_is_not_acceptable():
    rejected = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    with pytest.raises(NotAcceptable):
        read_answer(parse_sdp(rejected), ["PCMU", "PCMA"])
