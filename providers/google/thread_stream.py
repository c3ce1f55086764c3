"""A blocking gRPC stream driven from Trio: requests queued, responses handed over in order.

grpc's synchronous API is the only one the Google clients offer besides asyncio's, and
it blocks: ``next(call)`` waits for the service's next response. So one worker thread per
call reads the responses and hands each to the Trio thread; nothing else blocks.

- Requests go into a ``queue.SimpleQueue`` that grpc's own request thread drains, so
  sending never blocks the event loop. A sentinel ends the iterator: that is the
  half-close.
- The reader thread is started with ``trio.lowlevel.start_thread_soon`` (the primitive
  that ``trio.to_thread.run_sync`` is built on, with the same thread cache) and hands
  each response to Trio with ``TrioToken.run_sync_soon``, in order. Not ``to_thread.
  run_sync``: that needs a task awaiting it for the whole call, and an ASR stream has none
  (the ASR protocol is a plain object fed by its caller, not a context manager with a
  nursery), yet its interim results must arrive while the caller is busy elsewhere.
- Cancellation is grpc's: :meth:`GrpcStream.cancel` cancels the call (thread-safe), which
  ends the reader's ``next()`` at once with CANCELLED and sends RST_STREAM to the server;
  the reader then reports the end to Trio. Callers cancel on every way out of the work
  (a cancelled ``await``, ``aclose``), and :meth:`wait` lets them know the thread is gone.
  If the Trio run itself has ended, the reader cancels the call and stops.

The call is made (not just its reader started) on the Trio thread: for a stream-stream
method grpc returns the call object at once, so it can be cancelled from the start, even
before the service has answered anything.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
import trio

if TYPE_CHECKING:
    from outcome import Outcome

Request = TypeVar("Request")
Response = TypeVar("Response")

#: Put in the request queue to end the request stream.
_END: Any = object()


class GrpcStream(Generic[Request, Response]):
    """One stream-stream gRPC call bridged to Trio.

    ``on_response`` runs in the Trio thread for each response, in order; if it raises,
    the call is cancelled and the exception becomes :attr:`error`. ``on_end`` runs once,
    in the Trio thread, after the last response, however the call ended.
    """

    def __init__(self, method: Callable[[Iterator[Request]], Any], first: Request,
                 on_response: Callable[[Response], None], on_end: Callable[[], None] | None = None) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._on_response = on_response
        self._on_end = on_end
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._requests.put(first)
        self._half_closed = False
        self._cancelled = False
        self._ended = trio.Event()
        #: Why the call failed (a grpc.RpcError, or what ``on_response`` raised); None
        #: while it runs, when it completed, or when we cancelled it.
        self.error: BaseException | None = None
        self._call = method(iter(self._requests.get, _END))
        trio.lowlevel.start_thread_soon(self._read, self._report_end, name="grpc stream reader")

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def send(self, request: Request) -> None:
        """Queue ``request``; never blocks."""
        if self._half_closed:
            raise trio.ClosedResourceError("the request stream is closed")
        self._requests.put(request)

    def close(self) -> None:
        """Half-close: no more requests; the service answers what it has. Idempotent."""
        if not self._half_closed:
            self._half_closed = True
            self._requests.put(_END)

    def cancel(self) -> None:
        """Abandon the call: the service sees it cancelled. Idempotent; a no-op once ended."""
        if not self._ended.is_set():
            self._cancelled = True
            self._call.cancel()
        self.close()  # grpc's request thread is waiting on the queue: let it go

    async def wait(self) -> None:
        """Until the reader thread has handed over the call's end."""
        await self._ended.wait()

    # --- the reader thread -------------------------------------------------------------

    def _read(self) -> None:
        try:
            for response in self._call:
                self._token.run_sync_soon(self._receive, response)
        except trio.RunFinishedError:  # the program is over: nobody will read the rest
            self._call.cancel()

    def _report_end(self, result: Outcome[None]) -> None:
        try:
            self._token.run_sync_soon(self._end, result)
        except trio.RunFinishedError:
            pass

    # --- back in the Trio thread -------------------------------------------------------

    def _receive(self, response: Response) -> None:
        if self.error is not None or self._cancelled:
            return
        try:
            self._on_response(response)
        except Exception as exc:  # this runs in Trio's scheduler: it must not raise
            self.error = exc
            self.cancel()

    def _end(self, result: Outcome[None]) -> None:
        try:
            result.unwrap()
        except grpc.RpcError as exc:
            if self.error is None and not self._cancelled:
                self.error = exc
        except Exception as exc:  # a library failure in the reader thread
            if self.error is None:
                self.error = exc
        self.close()
        self._ended.set()
        if self._on_end is not None:
            self._on_end()
