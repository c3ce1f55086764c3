"""A pyVoIP softphone for the interop test, run as a subprocess (pyVoIP is threaded and
blocking, so it stays out of the test's Trio loop).

It registers to trivox's standalone registrar, calls ``--call``, records what it hears
for ``--seconds`` into ``--record`` (8 kHz unsigned 8-bit, pyVoIP's format), hangs up and
deregisters. It prints one status line per step for the test to read, and exits 1 with
a line saying what failed.
"""

from __future__ import annotations

import argparse
import sys
import time

from pyVoIP.VoIP import CallState, PhoneStatus, VoIPPhone

FRAME = 160  # 20 ms at 8 kHz, one byte per sample


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--rtp-low", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--call", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()

    phone = VoIPPhone(args.server, args.port, args.user, args.password, myIP="127.0.0.1",
                      sipPort=args.sip_port, rtpPortLow=args.rtp_low, rtpPortHigh=args.rtp_low + 10)
    phone.start()
    try:
        deadline = time.monotonic() + 10
        while phone.get_status() != PhoneStatus.REGISTERED:
            if phone.get_status() == PhoneStatus.FAILED or time.monotonic() > deadline:
                say(f"FAILED registration: {phone.get_status()}")
                return 1
            time.sleep(0.05)
        say("REGISTERED")
        call = phone.call(args.call)
        deadline = time.monotonic() + 15
        while call.state != CallState.ANSWERED:
            if call.state == CallState.ENDED or time.monotonic() > deadline:
                say(f"FAILED call: {call.state}")
                return 1
            time.sleep(0.02)
        say("ANSWERED")
        heard = bytearray()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            heard += call.read_audio(FRAME, blocking=True)
        with open(args.record, "wb") as record:
            record.write(heard)
        call.hangup()
        say("HUNGUP")
        return 0
    finally:
        phone.stop()
        say("STOPPED")


if __name__ == "__main__":
    sys.exit(main())
