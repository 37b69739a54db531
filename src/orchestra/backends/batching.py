"""MicroBatcher: gathers the concurrent requests of many asyncio episodes into batches for one model.

Each event loop that submits gets a queue and, while requests are pending, one worker task: it waits up to `wait_s`
for the batch to fill (or until `max_batch_size` requests are queued), runs the batch with `run` in a worker thread
(so the loop keeps running tools meanwhile), delivers each result to its caller, and repeats; requests that arrive
while a batch runs form the next one.

Invariants
- Every submitted request gets exactly one outcome: its result, the batch's failure (as `BackendError`), or
  cancellation (its caller was cancelled, or the loop shut the worker down).
- A request cancelled while queued is not run.
- `run` is called from worker threads, one batch at a time per loop; callers serialize across loops themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestra.backends.base import Sampling
from orchestra.backends.generate import Generation
from orchestra.errors import BackendError


@dataclass
class _Waiting:
    """A request queued on one event loop (mutable, private to the batcher)."""

    prompt_ids: tuple[int, ...]
    sampling: Sampling
    future: asyncio.Future[Generation]


@dataclass
class _LoopQueue:
    pending: list[_Waiting] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None


class MicroBatcher:
    """Batches `submit` calls for `run` (see the module docstring); the worker task lives only while work is queued."""

    def __init__(self, run: Callable[[list[tuple[tuple[int, ...], Sampling]]], list[Generation]],
                 max_batch_size: int, wait_s: float):
        self._run = run
        self._max = max_batch_size
        self._wait_s = wait_s
        self._queues: dict[asyncio.AbstractEventLoop, _LoopQueue] = {}

    async def submit(self, prompt_ids: tuple[int, ...], sampling: Sampling) -> Generation:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _LoopQueue())
        waiting = _Waiting(prompt_ids, sampling, loop.create_future())
        queue.pending.append(waiting)
        if len(queue.pending) >= self._max:
            queue.wake.set()
        if queue.worker is None or queue.worker.done():
            queue.worker = loop.create_task(self._drain(loop, queue))
        return await waiting.future

    async def _drain(self, loop: asyncio.AbstractEventLoop, queue: _LoopQueue) -> None:
        try:
            while queue.pending:
                await self._fill(loop, queue)
                batch = [w for w in queue.pending[: self._max] if not w.future.done()]
                del queue.pending[: self._max]
                if batch:
                    await self._run_and_deliver(batch)
        finally:
            if self._queues.get(loop) is queue:
                del self._queues[loop]
            for w in queue.pending:  # only left when the worker itself was cancelled
                w.future.cancel()

    async def _fill(self, loop: asyncio.AbstractEventLoop, queue: _LoopQueue) -> None:
        deadline = loop.time() + self._wait_s
        while len(queue.pending) < self._max and (remaining := deadline - loop.time()) > 0:
            queue.wake.clear()
            try:
                await asyncio.wait_for(queue.wake.wait(), remaining)
            except TimeoutError:
                return

    async def _run_and_deliver(self, batch: list[_Waiting]) -> None:
        try:
            results = await asyncio.to_thread(self._run, [(w.prompt_ids, w.sampling) for w in batch])
        except asyncio.CancelledError:
            for w in batch:  # the loop is shutting down: nobody may wait forever on a batch that will not report
                w.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - infrastructure failure: every caller in the batch gets it
            error = exc if isinstance(exc, BackendError) else BackendError(
                f"local generation failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc if error is not exc else exc.__cause__
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(error)
            return
        for w, result in zip(batch, results, strict=True):
            if not w.future.done():
                w.future.set_result(result)
