"""RFC 4028 session timers and RFC 3311 UPDATE, on the sans-IO user agent with plain data."""

from __future__ import annotations

import pytest

from sipgw.sip.message import Headers, Request, Response, parse_message, parse_name_addr, parse_via
from sipgw.sip.session_timer import IntervalTooSmall, SessionTimer, negotiate
from sipgw.sip.transaction import T1, TIMER_D, TIMEOUT, InviteClientTransaction, State
from sipgw.sip.ua import CallEnded, Reinvite, UserAgent
from tests.test_sip_ua import CALLER, SDP, request, sent

OUR_SDP = b"v=0\r\no=trivox 1 1 IN IP4 127.0.0.1\r\n"


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),  # nobody asked, the caller cannot refresh: no timer
    ({"Supported": "timer"}, SessionTimer(1800, we_refresh=False)),  # we ask, the caller refreshes
    ({"Supported": "timer", "Session-Expires": "600"}, SessionTimer(600, we_refresh=False)),
    ({"Supported": "timer", "Session-Expires": "600;refresher=uas"}, SessionTimer(600, we_refresh=True)),
    ({"Supported": "timer", "Session-Expires": "600;refresher=uac"}, SessionTimer(600, we_refresh=False)),
    ({"Session-Expires": "600"}, SessionTimer(600, we_refresh=True)),  # a proxy asked: we must refresh
    ({"k": "timer", "x": "300"}, SessionTimer(300, we_refresh=False)),  # compact forms
    ({"Supported": "timer", "Session-Expires": "soon"}, SessionTimer(1800, we_refresh=False)),  # malformed: none
])
def test_negotiation_picks_interval_and_refresher(headers, expected):
    assert negotiate(Headers(headers.items())) == expected


def test_an_interval_below_min_se_is_too_small():
    with pytest.raises(IntervalTooSmall) as raised:
        negotiate(Headers([("Session-Expires", "60")]))
    assert raised.value.min_se == 90


def test_too_small_interval_gets_422_with_min_se():
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")
    ua.receive(request("INVITE", body=SDP, extra="Supported: timer\r\nSession-Expires: 30\r\n"), CALLER, 0.0)
    ((response, _),) = sent(ua)
    assert response.status == 422 and response.headers.get("Min-SE") == "90"
    assert ua.events() == []


def call(extra: str, *, ua: UserAgent | None = None) -> tuple[UserAgent, str, str, Response]:
    """An answered and ACKed call whose INVITE carried ``extra`` headers."""
    ua = ua or UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")
    ua.receive(request("INVITE", body=SDP, extra=extra), CALLER, 0.0)
    (event,) = ua.events()
    ua.outgoing()
    ua.answer(event.key, OUR_SDP, 0.0)
    ((ok, _),) = sent(ua)
    tag = parse_name_addr(ok.headers.get("To")).tag
    ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), CALLER, 0.1)
    ua.events()
    return ua, event.key, tag, ok


def reply_to(message: Request, status: int, extra: str = "", reason: str = "OK") -> bytes:
    """The caller's answer to a request trivox sent in the dialog."""
    return (
        f"SIP/2.0 {status} {reason}\r\nVia: {message.headers.get('Via')}\r\n"
        f"From: {message.headers.get('From')}\r\nTo: {message.headers.get('To')}\r\n"
        f"Call-ID: {message.headers.get('Call-ID')}\r\nCSeq: {message.headers.get('CSeq')}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_caller_refreshes_and_a_missed_refresh_ends_the_call_with_bye():
    ua, key, tag, ok = call("Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n")
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get_all("Require") == ["timer"]
    assert "UPDATE" in ok.headers.get_all("Allow") and "timer" in ok.headers.get_all("Supported")
    # the caller refreshes with a body-less UPDATE at 60 s: answered here, the clock restarts
    ua.receive(request("UPDATE", branch="z9hG4bK-up1", cseq=2, to_tag=tag,
                       extra="Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n"), CALLER, 60.0)
    ((refreshed, _),) = sent(ua)
    assert refreshed.status == 200 and refreshed.headers.get("Session-Expires") == "120;refresher=uac"
    assert ua.events() == []
    ua.handle_timers(60.0 + 87.9)  # 120 - min(32, 120/3) = 88 s after the refresh
    assert sent(ua) == []
    ua.handle_timers(60.0 + 88.0)
    ((bye, _),) = sent(ua)
    assert bye.method == "BYE"
    assert ua.events() == [CallEnded(key, "session timer expired (RFC 4028)")]


def test_we_refresh_with_update_when_the_caller_allows_it():
    ua, key, tag, ok = call("Supported: timer\r\nSession-Expires: 120;refresher=uas\r\n"
                            "Allow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n")
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"
    ua.handle_timers(59.9)
    assert sent(ua) == []
    ua.handle_timers(60.0)  # half the interval
    ((update, dest),) = sent(ua)
    assert update.method == "UPDATE" and dest == CALLER and update.body == b""
    assert update.headers.get("Session-Expires") == "120;refresher=uac"
    assert parse_name_addr(update.headers.get("From")).tag == tag
    ua.receive(reply_to(update, 200, "Session-Expires: 120;refresher=uac\r\n"), CALLER, 60.1)
    ua.handle_timers(119.0)
    assert sent(ua) == []
    ua.handle_timers(120.1)  # the next refresh, 60 s after the last one succeeded
    assert [m.method for m, _ in sent(ua)] == ["UPDATE"]
    assert ua.active(key)


def test_we_refresh_with_reinvite_and_ack_its_2xx_each_time_it_comes():
    ua, key, tag, _ = call("Supported: timer\r\nSession-Expires: 90;refresher=uas\r\nAllow: INVITE, ACK, BYE\r\n")
    ua.handle_timers(45.0)
    ((reinvite, _),) = sent(ua)
    assert reinvite.method == "INVITE" and reinvite.body == OUR_SDP  # our SDP again, unchanged
    ua.handle_timers(45.0 + T1)  # Timer A: resent
    assert [m.method for m, _ in sent(ua)] == ["INVITE"]
    ok = reply_to(reinvite, 200, "Session-Expires: 90;refresher=uac\r\n")
    ua.receive(ok, CALLER, 45.6)
    ((ack, _),) = sent(ua)
    assert ack.method == "ACK" and ack.headers.get("CSeq") == f"{reinvite.headers.get('CSeq').split()[0]} ACK"
    assert parse_via(ack.headers.get("Via")).branch != parse_via(reinvite.headers.get("Via")).branch
    ua.receive(ok, CALLER, 46.1)  # the 2xx again: the same ACK again
    ((again, _),) = sent(ua)
    assert again.to_bytes() == ack.to_bytes()
    ua.handle_timers(45.6 + TIMEOUT)
    assert [m.method for m, _ in sent(ua)] == []  # nothing resent once the 2xx came
    assert ua.active(key)


def test_a_refresh_answered_481_ends_the_call():
    ua, key, tag, _ = call("Supported: timer\r\nSession-Expires: 90;refresher=uas\r\nAllow: UPDATE\r\n")
    ua.handle_timers(45.0)
    ((update, _),) = sent(ua)
    ua.receive(reply_to(update, 481, reason="Call/Transaction Does Not Exist"), CALLER, 45.1)
    assert [m.method for m, _ in sent(ua)] == ["BYE"]
    assert ua.events() == [CallEnded(key, "session refresh failed (481)")]


def test_reinvites_that_cross_get_491_and_ours_is_retried_within_two_seconds():
    ua, key, tag, _ = call("Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n")
    ua.handle_timers(45.0)
    ((ours, _),) = sent(ua)
    ua.receive(request("INVITE", branch="z9hG4bK-theirs", cseq=2, to_tag=tag, body=SDP), CALLER, 45.05)
    ((crossed, _),) = sent(ua)
    assert crossed.status == 491 and ua.events() == []
    ua.receive(reply_to(ours, 491, reason="Request Pending"), CALLER, 45.1)
    assert [m.method for m, _ in sent(ua)] == ["ACK"]  # the transaction ACKs a non-2xx
    ua.handle_timers(47.1)
    # (our 491 is resent too, as the caller never ACKed it)
    (retry,) = [m for m, _ in sent(ua) if isinstance(m, Request)]
    assert retry.method == "INVITE" and retry.headers.get("CSeq") != ours.headers.get("CSeq")


def test_update_with_an_offer_goes_to_the_tu_and_is_answered_once():
    ua, key, tag, _ = call("")
    ua.receive(request("UPDATE", branch="z9hG4bK-up2", cseq=2, to_tag=tag, body=SDP), CALLER, 5.0)
    (event,) = ua.events()
    assert isinstance(event, Reinvite) and event.request.method == "UPDATE"
    assert sent(ua) == []  # no 100 Trying for a non-INVITE
    ua.answer(key, b"v=0\r\nnew answer\r\n", 5.0)
    ((ok, _),) = sent(ua)
    assert ok.status == 200 and ok.body == b"v=0\r\nnew answer\r\n" and ok.headers.get("CSeq") == "2 UPDATE"
    ua.handle_timers(5.0 + T1)
    assert sent(ua) == []  # a non-INVITE 2xx is not resent by the UA core
    ua.receive(request("UPDATE", branch="z9hG4bK-up2", cseq=2, to_tag=tag, body=SDP), CALLER, 5.6)
    ((again, _),) = sent(ua)  # but the transaction answers its retransmission
    assert again.body == ok.body and ua.events() == []


def test_update_for_no_dialog_gets_481():
    ua, key, tag, _ = call("")
    ua.receive(request("UPDATE", branch="z9hG4bK-up3", cseq=2, to_tag="other"), CALLER, 5.0)
    assert [m.status for m, _ in sent(ua)] == [481]


def test_invite_client_transaction_acks_a_failure_on_its_own_branch():
    headers = Headers([("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours"), ("From", "<sip:a@b>;tag=1"),
                       ("To", "<sip:c@d>;tag=2"), ("Call-ID", "x"), ("CSeq", "7 INVITE"), ("Max-Forwards", "70")])
    tx = InviteClientTransaction(Request("INVITE", "sip:c@d", headers), 0.0)
    # Timer A: resent after T1, 2*T1, 4*T1, 8*T1, then 16*T1 = 8 s, past T2: no cap for an INVITE
    resent = [t for t in (0.5, 1.5, 3.5, 7.5, 11.5, 15.4, 15.5) if tx.on_timer(t) is not None]
    assert resent == [0.5, 1.5, 3.5, 7.5, 15.5]
    failure = parse_message(reply_to(Request("INVITE", "sip:c@d", headers), 488, reason="Not Here"))
    ack = parse_message(tx.on_response(failure, 16.0))
    assert ack.method == "ACK" and ack.headers.get("CSeq") == "7 ACK"
    assert parse_via(ack.headers.get("Via")).branch == "z9hG4bK-ours"
    assert tx.on_response(failure, 16.5) == ack.to_bytes()  # the failure again: the ACK again
    tx.on_timer(16.0 + TIMER_D)
    assert tx.state is State.TERMINATED and not tx.timed_out


def test_invite_client_transaction_times_out_after_timer_b():
    headers = Headers([("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b"), ("CSeq", "1 INVITE")])
    tx = InviteClientTransaction(Request("INVITE", "sip:c@d", headers), 0.0)
    while tx.state is not State.TERMINATED:
        tx.on_timer(tx.deadline)
    assert tx.timed_out
