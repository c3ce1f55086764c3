"""pyVoIP as the answerer of bench/media.py: the same calls, answered by a pyVoIP phone.

pyVoIP registers first (the callers' SIP socket says 200), then answers every INVITE in
a thread of its own and keeps writing agent audio (8-bit unsigned linear, its format)
while reading the caller's. It has no jitter buffer, VAD or resampling of its own, so it
does less per call than trivox does.

    python bench/media_pyvoip.py SIP_PORT REGISTRAR_PORT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from pyVoIP.VoIP import CallState, VoIPCall, VoIPPhone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.speech import speak  # noqa: E402

FRAME = 160  # 20 ms at 8 kHz, one byte a sample
AGENT_TEXT = "Thank you for calling. Your call is important to us. Please stay on the line."


def unsigned_8bit(pcm: bytes) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    return ((samples >> 8) + 128).astype(np.uint8).tobytes()


AGENT = unsigned_8bit(speak(AGENT_TEXT, 8000))


def answer(call: VoIPCall) -> None:
    call.answer()
    position = 0
    next_write = time.monotonic()
    while call.state == CallState.ANSWERED:
        call.write_audio(AGENT[position:position + FRAME])
        call.read_audio(FRAME, blocking=False)
        position = (position + FRAME) % (len(AGENT) - FRAME)
        next_write += 0.020
        time.sleep(max(0.0, next_write - time.monotonic()))


def main() -> None:
    sip_port, registrar_port = int(sys.argv[1]), int(sys.argv[2])
    phone = VoIPPhone("127.0.0.1", registrar_port, "bench", "bench", myIP="127.0.0.1", callCallback=answer,
                      sipPort=sip_port, rtpPortLow=30000, rtpPortHigh=39999)
    phone.start()
    try:
        while True:
            time.sleep(1)
    finally:
        phone.stop()


if __name__ == "__main__":
    main()
