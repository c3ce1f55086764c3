"""SIP over TCP and TLS on a live server: sipp over TCP, framing errors, a call over TLS."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path

import trio

from sipgw.sip.message import Request, Response, StreamParser, parse_name_addr
from tests.conftest import start_trivox
from tests.phone import transcript_events
from tests.test_sipp_call import run_sipp

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def request(method: str, transport: str, me: tuple[str, int], *, cseq: int = 1, to_tag: str = "",
            call_id: str = "tls-1", body: str = "", branch: str = "z9hG4bK-t1") -> bytes:
    to = "<sip:echo@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    content = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:echo@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {me[0]}:{me[1]};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=caller\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:t@{me[0]}:{me[1]};transport={transport.lower()}>\r\n"
        f"{content}Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()


class StreamPeer:
    """A SIP peer on one TCP or TLS connection, reading messages with our own framing."""

    def __init__(self, stream: trio.abc.Stream, me: tuple[str, int]) -> None:
        self.stream = stream
        self.me = me
        self.parser = StreamParser()

    async def next(self, timeout: float = 10) -> Request | Response:
        with trio.fail_after(timeout):
            while (message := self.parser.next_message()) is None:
                data = await self.stream.receive_some(65536)
                assert data, "trivox closed the connection"
                self.parser.feed(data)
        return message

    async def response(self, status: int) -> Response:
        while True:
            message = await self.next()
            if isinstance(message, Response) and message.status == status:
                return message


async def test_sipp_call_over_tcp_with_dtmf_and_our_bye(tmp_path):
    server = start_trivox(tmp_path, dialog="read_back_digits")
    try:
        # sipp over one TCP connection (-t t1): INVITE, ACK, three INFOs, then our BYE on
        # that same connection
        await run_sipp(server.sip, "uac_info_dtmf.xml", tmp_path, extra=("-t", "t1"))
        server.wait_for_log(r"call ended after .*: trivox hung up")
        events = transcript_events(server.transcripts)
        assert [e["digits"] for e in events if e["kind"] == "dtmf"] == ["427"]
    finally:
        server.stop()
    assert "SIP listening on tcp 127.0.0.1:%d" % server.sip[1] in server.log()


async def test_a_framing_error_closes_only_that_connection(trivox):
    good = await trio.open_tcp_stream(*trivox.sip)
    bad = await trio.open_tcp_stream(*trivox.sip)
    # no Content-Length on a stream: the message cannot be framed (RFC 3261 section 18.3)
    await bad.send_all(b"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-x\r\n"
                       b"From: <sip:t@127.0.0.1>;tag=a\r\nTo: <sip:echo@127.0.0.1>\r\nCall-ID: x\r\n"
                       b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n")
    with trio.fail_after(10):
        assert await bad.receive_some(65536) == b""  # closed by trivox
    trivox.wait_for_log(r"closing the tcp connection from 127\.0\.0\.1:\d+: no Content-Length on a stream")
    peer = StreamPeer(good, good.socket.getsockname())
    await good.send_all(request("OPTIONS", "TCP", peer.me, call_id="tcp-ok"))
    ok = await peer.response(200)
    assert ok.headers.get("Call-ID") == "tcp-ok"
    assert ok.headers.get("Contact").endswith(";transport=tcp>")
    await good.aclose()
    await bad.aclose()


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_call_over_tls_answered_and_hung_up_on_the_connection(tmp_path):
    cert, key = self_signed(tmp_path)
    tls_port = free_tcp_port()
    server = start_trivox(tmp_path, f'[sip]\ntls_port = {tls_port}\ntls_certificate = "{cert}"\n'
                                    f'tls_key = "{key}"\n')
    try:
        server.wait_for_log(rf"SIP listening on tls 127\.0\.0\.1:{tls_port}")
        context = ssl.create_default_context(cafile=str(cert))
        tcp = await trio.open_tcp_stream("127.0.0.1", tls_port)
        tls = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        await tls.do_handshake()  # verifies trivox's certificate against the one we made
        peer = StreamPeer(tls, tcp.socket.getsockname())
        rtp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await rtp.bind(("127.0.0.1", 0))
        await tls.send_all(request("INVITE", "TLS", peer.me, body=SDP.format(rtp=rtp.getsockname()[1])))
        ok = await peer.response(200)
        # the Contact sends the rest of the call to our TLS port, over TLS
        assert re.fullmatch(rf"<sip:trivox@127\.0\.0\.1:{tls_port};transport=tls>", ok.headers.get("Contact"))
        tag = parse_name_addr(ok.headers.get("To")).tag
        await tls.send_all(request("ACK", "TLS", peer.me, to_tag=tag, branch="z9hG4bK-t2"))
        with trio.fail_after(20):  # the greeting arrives by RTP: the call is up
            await rtp.recvfrom(2048)
        await tls.send_all(request("BYE", "TLS", peer.me, cseq=2, to_tag=tag, branch="z9hG4bK-t3"))
        bye_ok = await peer.response(200)
        assert bye_ok.headers.get("CSeq") == "2 BYE"
        server.wait_for_log(r"call ended after .*: the caller hung up")
        await tls.aclose()
        rtp.close()
    finally:
        server.stop()
