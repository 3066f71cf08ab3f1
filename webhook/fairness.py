"""Per-request fairness at a shared limit (issue 11).

The registry client allows a bounded number of requests in flight per
registry. With a plain FIFO semaphore, one admission request naming 200
images queues hundreds of fetches, and every request behind it waits for all
of them — past its own deadline, where a signed image is denied and an
``onError: allow`` policy allows an unsigned one. ``FairLimiter`` hands each
freed slot to the next *admission request* in turn (round robin over owners),
so a request's wait depends on how many requests are waiting, not on how much
work the others brought.

The owner is a context variable that ``FactGatherer.gather`` sets once per
admission request; tasks it starts (and the shared fetches they create)
inherit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import OrderedDict, deque
from types import TracebackType

_owner: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "sealgate_request_owner", default=None
)


def start_request() -> contextvars.Token[object | None]:
    """Mark the current context (and tasks started from it) as one admission request."""
    return _owner.set(object())


def end_request(token: contextvars.Token[object | None]) -> None:
    _owner.reset(token)


class FairLimiter:
    """At most ``slots`` holders; waiters are served round robin by owner."""

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._free = slots
        self._queues: OrderedDict[object | None, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def idle(self) -> bool:
        return self._free == self._slots and not self._queues

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def acquire(self) -> None:
        if self._free > 0 and not self._queues:
            self._free -= 1
            return
        owner = _owner.get()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(owner, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                queue = self._queues.get(owner)
                if queue is not None:
                    with contextlib.suppress(ValueError):
                        queue.remove(waiter)
                    if not queue:
                        del self._queues[owner]
            raise

    def release(self) -> None:
        while self._queues:
            owner, queue = self._queues.popitem(last=False)
            waiter = queue.popleft()
            if queue:
                self._queues[owner] = queue  # to the back of the line: round robin
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
