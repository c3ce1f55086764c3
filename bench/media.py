"""Media plane load: N simultaneous calls on loopback, answered by trivox or by pyVoIP.

Each call receives and sends real RTP at 50 packets per second: the callers send speech
with pauses (PCMU), each from its own point of the script as on a real trunk (or, with
--in-step, all the same words on the same tick), and the answerer talks back. trivox has its whole media plane in the loop
(jitter buffer, G.711, resampling, batched VAD, barge-in; see bench/media_trivox.py);
pyVoIP answers the same calls with its own phone (bench/media_pyvoip.py). The answerer
runs pinned to one core and the callers to another, so "CPU" is one core's share.

Per N and answerer it prints: CPU of the answerer (percent of its core, and ms per call
per second), the p99 deviation of the answerer's send interval from 20 ms (kernel
receive timestamps, consecutive packets of continuous audio), frames more than a whole
frame late, and frames missing from the sequence. Then the CPU the VAD takes per call,
batched across calls and run per call.

    .venv/bin/python bench/media.py [--calls 50,100,200,300] [--seconds 10] [--answerers trivox,pyvoip] [--in-step]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.media_callers import Callers, Figures  # noqa: E402
from media.codecs import PCMU  # noqa: E402
from media.vad import SileroVad, VadBatcher  # noqa: E402
from tests.speech import speak  # noqa: E402

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
CALLER_TEXT = ["I would like to book a table for two tonight", "yes at eight o'clock please",
               "could you repeat that", "thank you very much"]
WARMUP_S = 3.0
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def caller_audio(rate: int = 8000) -> bytes:
    """Speech with a second of silence after each sentence (the VAD cuts turns)."""
    return b"".join(speak(text, rate) + bytes(rate * 2) for text in CALLER_TEXT)


def caller_payloads() -> list[bytes]:
    pcm = caller_audio()
    pcm += bytes(-len(pcm) % 320)
    encoder = PCMU.transcoder()
    return [encoder.encode(pcm[i:i + 320]) for i in range(0, len(pcm), 320)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime + stime


def pinned(command: list[str], core: int | None) -> list[str]:
    return ["taskset", "-c", str(core), *command] if core is not None else command


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_ready(callers: Callers, answerer: str, target: tuple[str, int], process: subprocess.Popen) -> None:
    """trivox: answers OPTIONS. pyVoIP: has registered (and so listens)."""
    with trio.fail_after(60):
        while not callers.ready(answerer):
            if process.poll() is not None:
                raise RuntimeError(f"{answerer} exited with {process.returncode}")
            if answerer == "trivox":
                await callers.probe(target)
            await trio.sleep(0.2)


async def one_run(answerer: str, calls: int, seconds: float, core: int | None,
                  in_step: bool = False) -> tuple[Figures, float]:
    callers = Callers(caller_payloads(), in_step=in_step)
    me = await callers.bind()
    port = free_port()
    if answerer == "trivox":
        command = [PYTHON, str(HERE / "media_trivox.py"), str(port)]
    else:
        command = [PYTHON, str(HERE / "media_pyvoip.py"), str(port), str(me[1])]
    process = subprocess.Popen(pinned(command, core), stdout=subprocess.DEVNULL, stderr=None)
    target = ("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(callers.serve_sip)
            await wait_ready(callers, answerer, target, process)
            await callers.place(calls, target)
            nursery.start_soon(callers.media)
            await trio.sleep(WARMUP_S)
            callers.measure(True)
            before = cpu_seconds(process.pid)
            await trio.sleep(seconds)
            cpu = (cpu_seconds(process.pid) - before) / seconds
            callers.measure(False)
            await callers.hang_up(target)
            nursery.cancel_scope.cancel()
    finally:
        callers.close()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return callers.figures(), cpu


def vad_cpu_per_call(calls: int, seconds: float = 5.0) -> tuple[float, float]:
    """CPU seconds per call-second of caller audio that the VAD model takes, (batched,
    per call), on the bench's caller audio (its pauses are gated in both)."""
    pcm = caller_audio()
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    window = 256
    windows = [samples[i:i + window] for i in range(0, int(seconds * 8000) - window + 1, window)]
    loud = [w for w in windows if np.sqrt(np.mean((w * 32768.0) ** 2)) >= 32768 * 10 ** (-60 / 20)]

    alone = [SileroVad(8000) for _ in range(calls)]
    start = time.process_time()
    for w in loud:
        for stream in alone:
            stream.probability(w)
    unbatched = (time.process_time() - start) / calls / seconds

    async def batched_run() -> float:
        batcher = VadBatcher(interval=3600)  # only "every stream has a window due" runs a batch
        streams = [batcher.stream(8000) for _ in range(calls)]
        async with trio.open_nursery() as nursery:
            await nursery.start(batcher.run)
            begin = time.process_time()
            async with trio.open_nursery() as scorers:
                for stream in streams:
                    scorers.start_soon(score_all, stream)
            used = time.process_time() - begin
            nursery.cancel_scope.cancel()
        return used

    async def score_all(stream) -> None:
        for w in loud:
            await stream.score(w)

    batched = trio.run(batched_run) / calls / seconds
    return batched, unbatched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="50,100,200,300", help="comma-separated call counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--answerers", default="trivox,pyvoip")
    parser.add_argument("--in-step", action="store_true",
                        help="all callers speak the same words on the same tick (worst case); "
                             "by default each starts at its own point of the script")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    answerer_core = cores[0] if len(cores) > 1 else None
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[1]})  # the callers on the other core
    counts = [int(n) for n in args.calls.split(",")]
    print(f"{'answerer':<9} {'calls':>5} {'up':>5} {'CPU %':>6} {'ms/call/s':>9} {'p99 dev ms':>10} "
          f"{'late':>6} {'dropped':>8}")
    per_call: dict[int, float] = {}
    for answerer in args.answerers.split(","):
        for calls in counts:
            figures, cpu = trio.run(one_run, answerer, calls, args.seconds, answerer_core, args.in_step)
            if answerer == "trivox":
                per_call[calls] = cpu / max(1, figures.answered)
            print(f"{answerer:<9} {calls:>5} {figures.answered:>5} {100 * cpu:>6.1f} "
                  f"{1000 * cpu / max(1, figures.answered):>9.2f} {figures.deviation_p99_ms:>10.2f} "
                  f"{figures.late_frames:>6} {figures.dropped_frames:>8}", flush=True)
    if per_call:
        calls = max(per_call)
        batched, unbatched = vad_cpu_per_call(min(calls, 200))
        print(f"\nVAD model CPU per call: batched {1000 * batched:.2f} ms/s, per call {1000 * unbatched:.2f} ms/s; "
              f"of trivox's {1000 * per_call[calls]:.2f} ms/s per call at {calls} calls that is "
              f"{100 * batched / per_call[calls]:.0f}% batched, {100 * unbatched / per_call[calls]:.0f}% unbatched")


if __name__ == "__main__":
    main()
