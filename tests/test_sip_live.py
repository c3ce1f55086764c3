"""The SIP server on a real UDP socket: what it answers, and what it drops."""

from __future__ import annotations

import socket

import pytest

INVITE_NO_G711 = (
    "INVITE sip:echo@{host}:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-live-488;rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: <sip:echo@127.0.0.1>\r\n"
    "Call-ID: live-488@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:t@127.0.0.1:{me}>\r\n"
    "Content-Type: application/sdp\r\nContent-Length: {length}\r\n\r\n{body}"
)
SDP_OPUS_ONLY = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 "m=audio 40000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n")


@pytest.fixture
def udp(trivox):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def exchange(sock, trivox, data: bytes) -> bytes:
    sock.sendto(data, trivox.sip)
    return sock.recvfrom(65536)[0]


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def test_garbage_is_dropped_and_logged_and_the_server_still_answers(trivox, udp):
    udp.sendto(b"\x16\x03\x01 definitely not SIP\r\n\r\n", trivox.sip)
    trivox.wait_for_log(r"dropped unparseable datagram from 127\.0\.0\.1:\d+")
    me = udp.getsockname()[1]
    options = (f"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-o1;rport\r\n"
               "From: <sip:t@127.0.0.1>;tag=a\r\nTo: <sip:echo@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 7 OPTIONS\r\n"
               "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    reply = exchange(udp, trivox, options)
    assert status_of(reply) == 200 and b"\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, INFO, UPDATE\r\n" in reply


def test_invalid_request_gets_400_naming_the_problem(trivox, udp):
    me = udp.getsockname()[1]
    bad = (f"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-b1;rport\r\n"
           "From: <sip:t@127.0.0.1>;tag=a\r\nTo: <sip:echo@127.0.0.1>\r\nCSeq: 1 OPTIONS\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    reply = exchange(udp, trivox, bad)
    assert reply.startswith(b"SIP/2.0 400 Missing Call-ID header\r\n")


def test_invite_without_a_usable_codec_gets_488(trivox, udp):
    me = udp.getsockname()[1]
    host, port = trivox.sip
    invite = INVITE_NO_G711.format(host=host, port=port, me=me, length=len(SDP_OPUS_ONLY), body=SDP_OPUS_ONLY)
    udp.sendto(invite.encode(), trivox.sip)
    statuses = []
    while not statuses or statuses[-1] < 200:
        statuses.append(status_of(udp.recvfrom(65536)[0]))
    assert statuses == [100, 488]
    trivox.wait_for_log(r"no audio stream offers any of PCMU, PCMA")


def test_trunk_mode_answers_403_outside_trusted_networks(tmp_path):
    from tests.conftest import start_trivox

    server = start_trivox(tmp_path, '[sip]\ntrusted_networks = ["192.0.2.0/24"]\n')
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        me = sock.getsockname()[1]
        host, port = server.sip
        sdp = SDP_OPUS_ONLY.replace("111\r\na=rtpmap:111 opus/48000/2", "0")
        invite = INVITE_NO_G711.format(host=host, port=port, me=me, length=len(sdp), body=sdp)
        sock.sendto(invite.encode(), server.sip)
        assert status_of(sock.recvfrom(65536)[0]) == 403
        server.wait_for_log(r"refused a call from 127\.0\.0\.1: not in sip.trusted_networks")
    finally:
        sock.close()
        server.stop()
