"""Kamailio, a SIP proxy nobody here wrote, as registrar and proxy on loopback.

trivox registers to it with digest auth (qop=auth), a sipp call for trivox's address of
record goes to Kamailio, which finds trivox's binding and relays the call record-routed,
so the ACK and the BYE come through Kamailio too. At shutdown trivox's Expires: 0
removes the binding, and the next call for it gets 404 from Kamailio.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import start_trivox
from tests.test_sipp_call import free_udp_port, run_sipp, sipp_command

CONFIG = Path(__file__).parent / "kamailio" / "kamailio.cfg"
PASSWORD = "kam-s3cret"


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[tuple[tuple[str, int], Path]]:
    """Kamailio in the foreground on a free loopback port; yields its address and log."""
    assert shutil.which("kamailio"), "kamailio is missing: apt-get install kamailio (README, .ci/run)"
    port = free_udp_port()
    config = tmp_path / "kamailio.cfg"
    config.write_text(CONFIG.read_text().replace("@PORT@", str(port)).replace("@PASSWORD@", PASSWORD))
    log = tmp_path / "kamailio.log"
    runtime = tmp_path / "run"
    runtime.mkdir()
    with open(log, "wb") as out:
        process = subprocess.Popen(["kamailio", "-DD", "-E", "-f", str(config), "-Y", str(runtime),
                                    "-m", "32", "-M", "4"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "SO_RCVBUF is finally" not in log.read_text(errors="replace"):  # its UDP socket is up
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield ("127.0.0.1", port), log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(path: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in\n{path.read_text()[-3000:]}"
        time.sleep(0.05)


async def test_registered_through_kamailio_and_called_through_it(kamailio, tmp_path):
    (host, port), log = kamailio
    server = start_trivox(tmp_path, f'[[sip.register]]\nregistrar = "{host}:{port}"\nusername = "trivox"\n'
                                    f'password = "{PASSWORD}"\n')
    try:
        server.wait_for_log(r"registered sip:trivox@127\.0\.0\.1 for \d+ s")
        wait_for(log, "REGISTER sip:trivox@127.0.0.1 expires=300")
        # sipp checks every step: 200 via Kamailio, ACK and BYE along the recorded route
        await run_sipp((host, port), "uac_via_proxy.xml", tmp_path)
        wait_for(log, f"routing INVITE for sip:trivox@127.0.0.1:{port} to sip:trivox@127.0.0.1:{server.sip[1]}")
        server.wait_for_log(r"call started from sip:sipp@")
        server.wait_for_log(r"call ended after .*: the caller hung up")
    finally:
        assert server.stop() == 0
    # trivox's Expires: 0 at shutdown removed the binding: Kamailio has no one to route to
    wait_for(log, "REGISTER sip:trivox@127.0.0.1 expires=0")
    sipp = await trio.run_process(
        [*sipp_command((host, port), "uac_via_proxy.xml", free_udp_port()), "-timeout", "10s"],
        check=False, cwd=tmp_path, capture_stdout=True, capture_stderr=True)
    assert sipp.returncode != 0
    assert b"404" in (sipp.stdout or b"") + (sipp.stderr or b"") or \
        "404" in "".join(p.read_text() for p in tmp_path.glob("uac_via_proxy_*_errors.log"))
