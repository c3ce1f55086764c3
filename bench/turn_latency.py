"""Turn latency of the embedded default: end of caller speech -> first agent audio.

Starts `trivox serve` on loopback and places AudioSocket calls one after another, each
like Asterisk would (a frame every 30 ms). In each call the caller waits out the
greeting, says one sentence and measures how long after its last speech frame the
first frame of the echo carries speech. The figure includes the VAD's endpointing delay
(vad.min_silence_ms, 500 ms by default), ASR finalisation, TTS start and pacing.

    .venv/bin/python bench/turn_latency.py [--calls 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import start_trivox  # noqa: E402
from tests.phone import Asterisk, frame  # noqa: E402
from tests.speech import speak  # noqa: E402

SENTENCES = ["hello world", "what is the weather today", "one two three", "good morning", "book a table"]


async def one_call(address: tuple[str, int], sentence: bytes) -> float:
    client = await Asterisk.connect(address)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.read)
        nursery.start_soon(client.send_audio)
        spoken_end, reply = await client.converse(sentence)
        await client.send_frame(frame(0x00))
        nursery.cancel_scope.cancel()
    return reply - spoken_end


async def run(calls: int, address: tuple[str, int]) -> list[float]:
    sentences = [speak(SENTENCES[i % len(SENTENCES)], 8000) for i in range(calls)]
    return [await one_call(address, sentence) for sentence in sentences]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_trivox(Path(folder))
        try:
            latencies = trio.run(run, args.calls, server.audiosocket)
        finally:
            server.stop()
    ms = sorted(1000 * x for x in latencies)
    print(f"turn latency over {len(ms)} AudioSocket calls (end of caller speech -> first agent speech):")
    print(f"  min {ms[0]:.0f} ms   median {statistics.median(ms):.0f} ms   max {ms[-1]:.0f} ms")
    print("  each: " + ", ".join(f"{x:.0f}" for x in ms))


if __name__ == "__main__":
    main()
