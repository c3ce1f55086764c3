"""Fixtures for end-to-end tests: a real `trivox serve` process on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TRIVOX = Path(sys.executable).with_name("trivox")
ROOT = Path(__file__).resolve().parents[1]
#: Loading the models (Silero, pocketsphinx, eSpeak) on a cold machine takes a few seconds.
STARTUP_TIMEOUT = 60.0
LISTENING = re.compile(r"(SIP|AudioSocket) listening on (?:udp|tcp) (\S+):(\d+)")


@dataclass
class TrivoxProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    transcripts: Path
    sip: tuple[str, int]
    audiosocket: tuple[str, int]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_trivox(tmp_path: Path, extra_config: str = "", env: dict[str, str] | None = None,
                 dialog: str | None = None) -> TrivoxProcess:
    """`trivox serve` on loopback ports; ``dialog`` names a handler in tests/dialogs.py."""
    if dialog is not None:
        extra_config += f'[dialog]\nhandler = "tests.dialogs:{dialog}"\n'
        env = {**(env or {}), "PYTHONPATH": str(ROOT)}
    transcripts = tmp_path / "transcripts"
    config = tmp_path / "trivox.toml"
    config.write_text(
        f'[transcripts]\ndir = "{transcripts}"\n[log]\nlevel = "debug"\n' + extra_config
    )
    log_path = tmp_path / "trivox.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(TRIVOX), "serve", "-c", str(config),
             "--sip-listen", "127.0.0.1:0", "--audiosocket-listen", "127.0.0.1:0"],
            stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    addresses: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while len(addresses) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"trivox did not start:\n{log_path.read_text()}")
        for kind, host, port in LISTENING.findall(log_path.read_text()):
            addresses[kind] = (host, int(port))
        time.sleep(0.05)
    return TrivoxProcess(process, log_path, transcripts, addresses["SIP"], addresses["AudioSocket"])


@pytest.fixture
def trivox(tmp_path: Path) -> Iterator[TrivoxProcess]:
    server = start_trivox(tmp_path)
    try:
        yield server
    finally:
        server.stop()
