"""RFC 4475 torture messages through the sans-IO core.

The 49 messages are read from ../shared/rfc4475 (never copied here). Each goes into a
fresh UserAgent from a loopback source, and the test checks what trivox answers as an
endpoint, per that README's summary of the RFC: a status code, or nothing (dropped).
Nothing is sent anywhere: the user agent only returns datagrams.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipgw.sip.message import Request, Response, parse_message, parse_name_addr, parse_uri, parse_via
from sipgw.sip.ua import IncomingCall, UserAgent

TORTURE = Path(__file__).resolve().parents[2] / "shared" / "rfc4475"

# file -> statuses trivox sends. Where the RFC allows a liberal reading, the comment says
# which one trivox takes.
EXPECTED: dict[str, list[int]] = {
    # 3.1.1 valid messages
    "wsinv": [481],  # well-formed in-dialog INVITE (To has a tag) for a dialog we do not have
    "intmeth": [501],  # unknown method: 501 with Allow
    "esc01": [100],  # valid INVITE: accepted
    "escnull": [405],  # valid REGISTER; we are not a registrar
    "esc02": [501],  # RE%47IST%45R is not REGISTER
    "lwsdisp": [200],  # accepted as well formed
    "longreq": [100],
    "dblreq": [405],  # the REGISTER, trailing octets ignored
    "semiuri": [200],
    "transports": [200],
    "mpart01": [405],  # MESSAGE: parsed, framed by Content-Length, not served
    "unreason": [],  # a response matching no transaction
    "noreason": [],
    # 3.1.2 invalid messages
    "badinv01": [400],
    "clerr": [400],  # UDP: 400
    "ncl": [400],
    "scalar02": [400],
    "scalarlg": [],  # invalid response: discarded
    "quotbal": [400],
    "ltgtruri": [400],
    "lwsruri": [400],
    "lwsstart": [400],
    "trws": [400],
    "escruri": [100],  # liberal: the escaped headers stay inside the URI, never become headers
    "baddate": [100],  # the Date does not matter to us: ignored
    "regbadct": [405],
    "badaspec": [200],  # liberal: the spaces are ignored
    "baddn": [200],  # liberal: the display name is taken as written
    "badvers": [505],
    "mismatch01": [400],
    "mismatch02": [400],  # 501 preferred, 400 acceptable: the CSeq mismatch is found first
    "bigcode": [],  # dropped
    # 3.2 transaction layer
    "badbranch": [200],  # RFC 2543 matching fallback
    # 3.3 application layer
    "insuf": [400],
    "unkscm": [416],
    "novelsc": [416],
    "unksm2": [405],
    "bext01": [420],
    "invut": [415],
    "regaut01": [405],  # a non-registrar endpoint sends 405
    "multi01": [400],
    "mcl01": [400],
    "bcast": [],  # a 200 for nothing of ours: discarded, never forwarded
    "zeromf": [200],  # an endpoint processes Max-Forwards: 0 normally
    "cparam01": [405],
    "cparam02": [405],
    "regescrt": [405],
    "sdp01": [406],
    # 3.4 backward compatibility
    "inv2543": [100],  # RFC 2543 INVITE: accepted
}


def files() -> list[Path]:
    found = sorted(TORTURE.glob("*.dat"))
    assert len(found) == 49, f"expected the 49 RFC 4475 messages in {TORTURE}"
    return found


def test_every_message_has_an_expectation():
    assert {path.stem for path in files()} == set(EXPECTED)


@pytest.mark.parametrize("path", files(), ids=lambda p: p.stem)
def test_endpoint_answers_as_rfc4475_says(path):
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")
    ua.receive(path.read_bytes(), ("127.0.0.1", 5070), 0.0)
    sent = [(parse_message(data), dest) for data, dest in ua.outgoing()]
    assert [m.status for m, _ in sent] == EXPECTED[path.stem]
    # the source address, never a Via host (the port is the Via's unless it asked for rport)
    assert all(dest[0] == "127.0.0.1" for _, dest in sent)
    events = ua.events()
    assert bool(events) == (EXPECTED[path.stem] == [100])
    assert all(isinstance(event, IncomingCall) for event in events)


def load(name: str) -> Request | Response:
    return parse_message((TORTURE / f"{name}.dat").read_bytes())


def test_semantics_the_application_needs():
    escnull = load("escnull")
    assert parse_uri(parse_name_addr(escnull.headers.get("To")).uri).user == "null-%00-null"  # not cut at %00
    contacts = [parse_uri(parse_name_addr(c).uri).user for c in escnull.headers.get_all("Contact")]
    assert contacts == ["%00", "%00%00"]  # two distinct contacts
    assert len(load("esc02").headers.get_all("Contact")) == 2
    assert parse_uri(load("semiuri").uri).user == "user;par=u%40example.net"
    transports = [parse_via(v).transport for v in load("transports").headers.get_all("Via")]
    assert transports[0] == "UDP" and len(transports) == 5
    assert load("dblreq").body == b""
    assert load("mpart01").body.count(b"\x00") == 2
    assert load("unreason").reason.startswith("= 2**3 * 5**2 но")
    assert load("noreason").reason == ""
    assert load("bext01").headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert load("zeromf").headers.get("Max-Forwards") == "0"
