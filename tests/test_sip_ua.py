"""The sans-IO user agent with plain data: bytes and times in, bytes and events out."""

from __future__ import annotations

import pytest

from sipgw.sip.message import Request, Response, make_response, parse_message, parse_name_addr, parse_via
from sipgw.sip.transaction import T1, T2, TIMEOUT
from sipgw.sip.ua import CallConfirmed, CallEnded, Digit, IncomingCall, Reinvite, TransferProgress, UserAgent

CALLER = ("127.0.0.1", 5070)
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0 8\r\n")


def request(method: str, *, branch: str = "z9hG4bK-1", cseq: int = 1, to_tag: str | None = None,
            uri: str = "sip:trivox@127.0.0.1:5060", extra: str = "", body: bytes = b"",
            via_params: str = ";rport", cseq_method: str | None = None) -> bytes:
    to = "<sip:trivox@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    content = "Content-Type: application/sdp\r\n" if body else ""
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}{via_params}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=alice1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: call-1@127.0.0.1\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"{extra}{content}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
def ua() -> UserAgent:
    return UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")


def sent(ua: UserAgent) -> list[tuple[Response | Request, tuple[str, int]]]:
    return [(parse_message(data), dest) for data, dest in ua.outgoing()]


def statuses(ua: UserAgent) -> list[int]:
    return [m.status for m, _ in sent(ua) if isinstance(m, Response)]


def invite(ua: UserAgent, now: float = 0.0) -> str:
    ua.receive(request("INVITE", body=SDP), CALLER, now)
    (event,) = ua.events()
    assert isinstance(event, IncomingCall)
    return event.key


def answered(ua: UserAgent) -> tuple[str, Response]:
    key = invite(ua)
    ua.outgoing()
    ua.answer(key, b"v=0\r\n", 0.0)
    ((ok, dest),) = sent(ua)
    assert isinstance(ok, Response)
    return key, ok


def test_invite_gets_100_then_200_with_tag_contact_and_sdp(ua):
    key = invite(ua)
    ((trying, dest),) = sent(ua)
    assert trying.status == 100 and dest == CALLER
    assert parse_name_addr(trying.headers.get("To")).tag is None
    ua.answer(key, b"v=0\r\n", 0.0)
    ((ok, _),) = sent(ua)
    assert ok.status == 200
    assert parse_name_addr(ok.headers.get("To")).tag
    assert ok.headers.get("Contact") == "<sip:trivox@127.0.0.1:5060>"
    assert ok.headers.get("Content-Type") == "application/sdp" and ok.body == b"v=0\r\n"
    assert ok.headers.get("Call-ID") == "call-1@127.0.0.1"
    assert ok.headers.get("CSeq") == "1 INVITE"


def test_via_is_stamped_with_received_and_rport(ua):
    ua.receive(request("OPTIONS"), ("127.0.0.1", 40000), 0.0)
    ((response, dest),) = sent(ua)
    assert dest == ("127.0.0.1", 40000)  # rport: the source port, not the Via port
    via = parse_via(response.headers.get("Via"))
    assert via.params["rport"] == "40000" and via.params["received"] == "127.0.0.1"


def test_without_rport_the_response_goes_to_the_via_port(ua):
    ua.receive(request("OPTIONS", via_params=""), ("127.0.0.1", 40000), 0.0)
    ((_, dest),) = sent(ua)
    assert dest == ("127.0.0.1", 5070)


def test_2xx_is_retransmitted_with_doubling_interval_until_ack(ua):
    key, ok = answered(ua)
    times = []
    now = 0.0
    while now < 10:
        deadline = ua.next_deadline()
        now = deadline
        ua.handle_timers(now)
        for message, _ in sent(ua):
            assert message.status == 200
            times.append(now)
    gaps = [round(b - a, 3) for a, b in zip([0.0, *times], times)]
    assert gaps[:5] == [T1, 2 * T1, 4 * T1, T2, T2]
    ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=parse_name_addr(ok.headers.get("To")).tag), CALLER, now)
    assert ua.events() == [CallConfirmed(key)]
    ua.handle_timers(now + 5)
    assert [m for m, _ in sent(ua) if isinstance(m, Response) and m.status == 200] == []


def test_no_ack_ends_the_call_with_bye(ua):
    key, _ = answered(ua)
    now = 0.0
    byes = []
    while not byes:
        now = ua.next_deadline()
        ua.handle_timers(now)
        byes += [m for m, _ in sent(ua) if isinstance(m, Request)]
    assert [b.method for b in byes] == ["BYE"]
    assert now == pytest.approx(TIMEOUT)
    assert CallEnded(key, "no ACK for our 200 OK") in ua.events()


def test_retransmitted_invite_gets_the_last_provisional_again(ua):
    invite(ua)
    ua.outgoing()
    ua.receive(request("INVITE", body=SDP), CALLER, 0.2)
    assert statuses(ua) == [100]
    assert ua.events() == []


def test_bye_ends_the_call(ua):
    key, ok = answered(ua)
    tag = parse_name_addr(ok.headers.get("To")).tag
    ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), CALLER, 0.1)
    ua.events()
    ua.receive(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=tag), CALLER, 1.0)
    assert statuses(ua) == [200]
    assert ua.events() == [CallEnded(key, "the caller hung up")]
    # a retransmitted BYE gets the same 200 from the transaction, and no second event
    ua.receive(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=tag), CALLER, 1.5)
    assert statuses(ua) == [200]
    assert ua.events() == []


def test_bye_for_an_unknown_dialog_gets_481(ua):
    ua.receive(request("BYE", to_tag="nope", cseq=2), CALLER, 0.0)
    assert statuses(ua) == [481]


def test_cancel_before_answer_gets_200_and_487(ua):
    key = invite(ua)
    ua.outgoing()
    ua.receive(request("CANCEL", cseq=1), CALLER, 0.5)  # same branch as the INVITE
    messages = sent(ua)
    assert sorted((m.status, m.headers.get("CSeq")) for m, _ in messages) == [(200, "1 CANCEL"), (487, "1 INVITE")]
    assert ua.events() == [CallEnded(key, "cancelled by the caller")]
    # the 487 is retransmitted (Timer G) until the ACK arrives, then never again
    ua.handle_timers(0.5 + T1)
    assert statuses(ua) == [487]
    ua.receive(request("ACK", cseq=1, to_tag="x"), CALLER, 1.2)
    ua.handle_timers(10.0)
    assert statuses(ua) == []


def test_active_tracks_the_call_until_cancel(ua):
    key = invite(ua)
    assert ua.active(key)
    ua.receive(request("CANCEL", cseq=1), CALLER, 0.5)
    assert not ua.active(key)


def test_cancel_for_nothing_gets_481(ua):
    ua.receive(request("CANCEL", branch="z9hG4bK-none"), CALLER, 0.0)
    assert statuses(ua) == [481]


def test_options_lists_allowed_methods(ua):
    ua.receive(request("OPTIONS"), CALLER, 0.0)
    ((response, _),) = sent(ua)
    assert response.status == 200
    assert set(response.headers.get_all("Allow")) == {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "NOTIFY", "INFO", "UPDATE"}


@pytest.mark.parametrize(("method", "status"), [("REGISTER", 405), ("SUBSCRIBE", 405), ("FROBNICATE", 501)])
def test_unserved_methods(ua, method, status):
    ua.receive(request(method), CALLER, 0.0)
    ((response, _),) = sent(ua)
    assert response.status == status
    assert "INVITE" in response.headers.get_all("Allow")


def test_invalid_request_gets_400_naming_the_problem(ua):
    data = request("OPTIONS").replace(b"Call-ID: call-1@127.0.0.1\r\n", b"")
    ua.receive(data, CALLER, 0.0)
    ((response, dest),) = sent(ua)
    assert response.status == 400 and dest == CALLER
    assert "call-id" in response.reason.lower()


def test_cseq_method_mismatch_gets_400(ua):
    ua.receive(request("OPTIONS", cseq_method="INVITE"), CALLER, 0.0)
    assert statuses(ua) == [400]


def test_garbage_is_dropped_silently(ua):
    ua.receive(b"\x00\x01 this is not SIP \r\n\r\n", CALLER, 0.0)
    ua.receive(b"", CALLER, 0.0)
    assert ua.outgoing() == [] and ua.events() == []


def test_unknown_uri_scheme_gets_416(ua):
    ua.receive(request("OPTIONS", uri="tel:+15551234"), CALLER, 0.0)
    assert statuses(ua) == [416]


def test_unknown_required_extension_gets_420(ua):
    ua.receive(request("OPTIONS", extra="Require: 100rel, foo\r\n"), CALLER, 0.0)
    ((response, _),) = sent(ua)
    assert response.status == 420 and response.headers.get_all("Unsupported") == ["100rel", "foo"]


def test_unknown_body_gets_415(ua):
    data = request("INVITE", branch="z9hG4bK-2", body=b"hello").replace(b"application/sdp", b"text/plain")
    ua.receive(data, CALLER, 0.0)
    assert statuses(ua) == [415]
    assert ua.events() == []


def test_delayed_offer_the_answer_comes_in_the_ack(ua):
    ua.receive(request("INVITE"), CALLER, 0.0)  # no body: we offer in the 2xx
    (event,) = ua.events()
    assert isinstance(event, IncomingCall) and event.request.body == b""
    ua.outgoing()
    ua.answer(event.key, b"v=0\r\nour offer\r\n", 0.0)
    ((ok, _),) = sent(ua)
    tag = parse_name_addr(ok.headers.get("To")).tag
    ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag, body=SDP), CALLER, 0.1)
    assert ua.events() == [CallConfirmed(event.key, SDP)]


def test_our_hangup_sends_a_bye_built_from_the_dialog(ua):
    key, ok = answered(ua)
    tag = parse_name_addr(ok.headers.get("To")).tag
    ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), CALLER, 0.1)
    ua.events()
    ua.hangup(key, 1.0)
    ((bye, dest),) = sent(ua)
    assert bye.method == "BYE" and dest == CALLER
    assert bye.uri == "sip:alice@127.0.0.1:5070"  # the remote target from Contact
    assert parse_name_addr(bye.headers.get("From")).tag == tag
    assert parse_name_addr(bye.headers.get("To")).tag == "alice1"
    assert bye.headers.get("Call-ID") == "call-1@127.0.0.1"
    assert ua.events() == [CallEnded(key, "trivox hung up")]
    ua.handle_timers(1.0 + T1)  # Timer E: the BYE again
    assert [m.method for m, _ in sent(ua)] == ["BYE"]
    ok_for_bye = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {bye.headers.get('Via')}\r\n"
        f"From: {bye.headers.get('From')}\r\nTo: {bye.headers.get('To')}\r\n"
        f"Call-ID: call-1@127.0.0.1\r\nCSeq: {bye.headers.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    ua.receive(ok_for_bye, CALLER, 1.6)
    ua.handle_timers(20.0)
    assert ua.outgoing() == []
    assert ua.next_deadline() is None or ua.next_deadline() > 20.0


def test_hangup_before_answer_rejects_with_480(ua):
    key = invite(ua)
    ua.outgoing()
    ua.hangup(key, 0.0)
    assert statuses(ua) == [480]


def confirmed_call(ua: UserAgent) -> tuple[str, str]:
    key, ok = answered(ua)
    tag = parse_name_addr(ok.headers.get("To")).tag
    ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), CALLER, 0.1)
    ua.events()
    return key, tag


def test_reinvite_is_handed_to_the_tu_and_answered_in_the_dialog(ua):
    key, tag = confirmed_call(ua)
    hold = SDP.replace(b"RTP/AVP 0 8\r\n", b"RTP/AVP 0 8\r\na=sendonly\r\n")
    ua.receive(request("INVITE", branch="z9hG4bK-re1", cseq=2, to_tag=tag, body=hold), CALLER, 1.0)
    (event,) = ua.events()
    assert isinstance(event, Reinvite) and event.key == key and event.request.body == hold
    assert statuses(ua) == [100]
    ua.answer(key, b"v=0\r\nanswer\r\n", 1.1)
    ((ok, _),) = sent(ua)
    assert ok.status == 200 and ok.headers.get("CSeq") == "2 INVITE" and ok.body == b"v=0\r\nanswer\r\n"
    assert parse_name_addr(ok.headers.get("To")).tag == tag
    ua.handle_timers(1.1 + T1)
    assert statuses(ua) == [200]  # resent until the ACK
    ua.receive(request("ACK", branch="z9hG4bK-ack2", cseq=2, to_tag=tag), CALLER, 1.7)
    ua.handle_timers(10.0)
    assert statuses(ua) == []
    assert ua.active(key)


def test_rejected_reinvite_leaves_the_call_up(ua):
    key, tag = confirmed_call(ua)
    ua.receive(request("INVITE", branch="z9hG4bK-re2", cseq=2, to_tag=tag, body=SDP), CALLER, 1.0)
    ua.events()
    ua.outgoing()
    ua.reject(key, 488, 1.1)
    assert statuses(ua) == [488]
    assert ua.active(key)
    ua.receive(request("BYE", branch="z9hG4bK-bye2", cseq=3, to_tag=tag), CALLER, 2.0)
    assert statuses(ua) == [200]


def test_reinvite_while_one_is_pending_gets_500_and_unknown_dialog_481(ua):
    key, tag = confirmed_call(ua)
    ua.receive(request("INVITE", branch="z9hG4bK-re3", cseq=2, to_tag=tag, body=SDP), CALLER, 1.0)
    ua.outgoing()
    ua.receive(request("INVITE", branch="z9hG4bK-re4", cseq=3, to_tag=tag, body=SDP), CALLER, 1.1)
    ((response, _),) = sent(ua)
    assert response.status == 500 and response.headers.get("Retry-After") == "1"
    ua.receive(request("INVITE", branch="z9hG4bK-re5", cseq=4, to_tag="not-ours", body=SDP), CALLER, 1.2)
    assert statuses(ua) == [481]


def test_trunk_mode_refuses_calls_from_outside_the_trusted_networks():
    import ipaddress

    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1",
                   trusted=[ipaddress.ip_network("10.0.0.0/8")])
    ua.receive(request("INVITE", body=SDP), CALLER, 0.0)  # from 127.0.0.1
    assert statuses(ua) == [403] and ua.events() == []
    ua.receive(request("INVITE", branch="z9hG4bK-t2", body=SDP), ("10.1.2.3", 5060), 0.0)
    assert statuses(ua) == [100] and isinstance(ua.events()[0], IncomingCall)
    ua.receive(request("OPTIONS", branch="z9hG4bK-t3"), CALLER, 0.0)  # keepalives from anyone
    assert statuses(ua) == [200]


def test_refer_then_notify_reports_the_transfer(ua):
    key, tag = confirmed_call(ua)
    ua.refer(key, "sip:200@pbx", 1.0)
    ((refer, dest),) = sent(ua)
    assert refer.method == "REFER" and dest == CALLER and refer.uri == "sip:alice@127.0.0.1:5070"
    assert refer.headers.get("Refer-To") == "<sip:200@pbx>"
    assert parse_name_addr(refer.headers.get("From")).tag == tag
    accepted = make_response(refer, 202)
    ua.receive(accepted.to_bytes(), CALLER, 1.1)
    assert ua.events() == [TransferProgress(key, 202, final=False)]
    notify = request("NOTIFY", branch="z9hG4bK-n1", cseq=2, to_tag=tag,
                     extra="Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n",
                     body=b"SIP/2.0 200 OK\r\n").replace(b"application/sdp", b"message/sipfrag")
    ua.receive(notify, CALLER, 1.5)
    assert statuses(ua) == [200]
    assert ua.events() == [TransferProgress(key, 200, final=True)]


def test_refused_refer_is_a_final_failure(ua):
    key, _ = confirmed_call(ua)
    ua.refer(key, "sip:200@pbx", 1.0)
    ((refer, _),) = sent(ua)
    ua.receive(make_response(refer, 603).to_bytes(), CALLER, 1.1)
    assert ua.events() == [TransferProgress(key, 603, final=True)]


def test_notify_outside_a_dialog_or_for_another_event(ua):
    ua.receive(request("NOTIFY", to_tag="none", extra="Event: refer\r\n"), CALLER, 0.0)
    assert statuses(ua) == [481]
    key, tag = confirmed_call(ua)
    ua.receive(request("NOTIFY", branch="z9hG4bK-n2", cseq=2, to_tag=tag, extra="Event: dialog\r\n"), CALLER, 1.0)
    assert statuses(ua) == [489]


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
     ("application/dtmf-relay", b"Signal= 11\r\nDuration= 100\r\n", "#"),
     ("application/dtmf", b"*", "*")],
)
def test_info_dtmf_becomes_a_digit(ua, content_type, body, digit):
    key, tag = confirmed_call(ua)
    info = request("INFO", branch="z9hG4bK-i1", cseq=2, to_tag=tag, body=body).replace(
        b"application/sdp", content_type.encode())
    ua.receive(info, CALLER, 1.0)
    assert statuses(ua) == [200]
    assert ua.events() == [Digit(key, digit)]


def test_info_that_is_not_dtmf(ua):
    key, tag = confirmed_call(ua)
    ua.receive(request("INFO", branch="z9hG4bK-i2", cseq=2, to_tag=tag), CALLER, 1.0)  # keepalive
    assert statuses(ua) == [200] and ua.events() == []
    other = request("INFO", branch="z9hG4bK-i3", cseq=3, to_tag=tag, body=b"<xml/>").replace(
        b"application/sdp", b"application/media_control+xml")
    ua.receive(other, CALLER, 1.1)
    assert statuses(ua) == [415]
    bad = request("INFO", branch="z9hG4bK-i4", cseq=4, to_tag=tag, body=b"Signal=Z\r\n").replace(
        b"application/sdp", b"application/dtmf-relay")
    ua.receive(bad, CALLER, 1.2)
    assert statuses(ua) == [400]
    ua.receive(request("INFO", branch="z9hG4bK-i5", cseq=5, to_tag="other"), CALLER, 1.3)
    assert statuses(ua) == [481]


def test_keepalive_options_in_the_call_and_a_peer_that_forgot_it():
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1", keepalive=30.0)
    key, tag = confirmed_call(ua)
    ua.handle_timers(30.1)
    ((probe, _),) = sent(ua)
    assert probe.method == "OPTIONS" and parse_name_addr(probe.headers.get("From")).tag == tag
    ua.receive(make_response(probe, 200).to_bytes(), CALLER, 30.2)
    assert ua.events() == [] and ua.active(key)
    ua.handle_timers(60.2)
    ((probe, _),) = sent(ua)
    ua.receive(make_response(probe, 481).to_bytes(), CALLER, 60.3)  # the dialog is gone over there
    assert [m.method for m, _ in sent(ua)] == ["BYE"]
    assert ua.events() == [CallEnded(key, "the caller's side is gone (keepalive: 481)")]
