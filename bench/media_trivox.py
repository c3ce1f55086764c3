"""trivox as the answerer of bench/media.py: the real server, with the media plane in the
loop and the speech engines out of it.

Everything a call does on the wire is the server's own code: SIP, RTP in and out, the
adaptive jitter buffer, G.711, the pacer, the VAD (batched across calls) and barge-in.
Only the engines are stand-ins, because the bench measures media, not pocketsphinx: the
"ASR" resamples each utterance to 16 kHz with a streaming resampler, as a real
recogniser's front end would, and throws it away; the "TTS" resamples a recorded
sentence from 16 kHz to the call's rate, chunk by chunk, as eSpeak's output is. The
dialog speaks that sentence over and over; the caller's speech interrupts it.

    python bench/media_trivox.py PORT
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dialog.call import Call, CallServices  # noqa: E402
from media.pacer import MediaClock  # noqa: E402
from media.resample import Resampler  # noqa: E402
from media.vad import VadBatcher  # noqa: E402
from providers.base import Transcript  # noqa: E402
from sipgw.calls import Calls  # noqa: E402
from sipgw.config import HostPort, load  # noqa: E402
from sipgw.server import serve  # noqa: E402
from tests.speech import speak  # noqa: E402

AGENT_TEXT = "Thank you for calling. Your call is important to us. Please stay on the line."
CHUNK_MS = 100


class DiscardingStream:
    def __init__(self, rate: int) -> None:
        self._resampler = Resampler(rate, 16000)

    async def send_audio(self, pcm: bytes) -> None:
        self._resampler.process(pcm)

    async def finish(self) -> Transcript:
        self._resampler.flush()
        return Transcript("", final=True)

    async def aclose(self) -> None:
        pass


class DiscardingAsr:
    name = "bench"

    async def open_stream(self, sample_rate: int) -> DiscardingStream:
        return DiscardingStream(sample_rate)


class RecordedTts:
    name = "bench"

    def __init__(self) -> None:
        self._speech = speak(AGENT_TEXT, 16000)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        resampler = Resampler(16000, sample_rate)
        step = 16000 * 2 * CHUNK_MS // 1000
        for start in range(0, len(self._speech), step):
            yield resampler.process(self._speech[start:start + step])
            await trio.lowlevel.checkpoint()
        yield resampler.flush()


async def keep_talking(call: Call) -> None:
    await call.answer()
    while True:
        await call.say(AGENT_TEXT)


def main() -> None:
    port = int(sys.argv[1])
    logging.basicConfig(level=logging.WARNING)
    config = load(None)
    config = dataclasses.replace(
        config,
        sip=dataclasses.replace(config.sip, listen=HostPort("127.0.0.1", port), transports=["udp"], keepalive=0),
        audiosocket=dataclasses.replace(config.audiosocket, enabled=False),
    )
    services = CallServices(asr=DiscardingAsr(), tts=RecordedTts(), vad=config.vad, vad_batcher=VadBatcher())
    trio.run(serve, config, Calls(services, keep_talking, MediaClock()))


if __name__ == "__main__":
    main()
