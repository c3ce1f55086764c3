"""trivox registers to sipp playing a registrar: digest challenge, refresh before expiry,
withdrawal at shutdown. sipp checks the digest answers itself (verifyauth)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import start_trivox
from tests.test_sipp_call import free_udp_port

SCENARIO = Path(__file__).with_name("sipp") / "registrar.xml"


def test_registers_with_digest_refreshes_and_unregisters(tmp_path):
    assert shutil.which("sipp"), "sipp is missing: apt-get install sip-tester (README, .ci/run)"
    port = free_udp_port()
    sipp = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
         "-timeout", "90s", "-timeout_error", "-nostdin", "-trace_err", "-trace_logs"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    trivox = start_trivox(tmp_path, f'''
[[sip.register]]
registrar = "127.0.0.1:{port}"
username = "trivox"
password = "${{TRIVOX_TEST_PBX_PASSWORD}}"
''', env={"TRIVOX_TEST_PBX_PASSWORD": "s3cret"})
    try:
        trivox.wait_for_log(r"registered sip:trivox@127\.0\.0\.1 for 6 s")
        trivox.wait_for_log(r"registered sip:trivox@127\.0\.0\.1 for 600 s", timeout=15)  # the refresh
    finally:
        assert trivox.stop() == 0
    output, _ = sipp.communicate(timeout=30)
    assert sipp.returncode == 0, output.decode(errors="replace")[-3000:]
    assert "unregistered sip:trivox@127.0.0.1" in trivox.log()
    assert "s3cret" not in trivox.log()
    logs = "".join(path.read_text() for path in tmp_path.glob("registrar_*_logs.log"))
    assert "refresh asked 300 s" in logs  # what trivox asked for, each time
