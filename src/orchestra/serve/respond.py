"""The response that runs one episode, plain or streamed, and cancels it when the client goes away.

`EpisodeResponse` is an ASGI response: it starts the episode as a task and, beside it, waits for the client's
`http.disconnect`. Whichever comes first wins: a finished episode is recorded (its trajectory appended, fsynced, before
the last byte is sent) and answered; a disconnect cancels the episode task, which cancels the model request or tool
call it is awaiting (an HTTP call closes its connection), well within RELIABILITY V6's 2 s.

A stream sends its headers and the assistant role at once, then each step when the client asked for steps
(`orchestra.stream_steps`), a keep-alive comment while the episode is quiet, and finally the answer, the finish chunk,
usage when `stream_options.include_usage` is set, and `[DONE]`. An infrastructure failure after the stream started
is sent as an `{"error": ...}` event, which the `openai` client raises as `APIError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from orchestra.redact import redact
from orchestra.serve.auth import send_json
from orchestra.serve.episode import EpisodeJob, ServedPool, run_job
from orchestra.serve.schema import error_body
from orchestra.serve.wire import DONE, KEEPALIVE, chunk, completion_body, final_chunks, sse
from orchestra.types import Termination, Trajectory

log = logging.getLogger("orchestra.serve")
KEEPALIVE_S = 10.0

Record = Callable[[Trajectory, EpisodeJob], Awaitable[None]]


class EpisodeResponse(Response):
    def __init__(self, job: EpisodeJob, served: ServedPool, model: str, *, stream: bool, include_usage: bool,
                 record: Record, release: Callable[[], None]):
        super().__init__(status_code=200)
        self.job, self.served, self.model = job, served, model
        self.stream, self.include_usage = stream, include_usage
        self.record, self.release = record, release

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        watcher = asyncio.create_task(_disconnected(receive))
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        emit = queue.put_nowait if self.stream and self.job.stream_steps else None
        episode = asyncio.create_task(run_job(self.job, self.served, emit))
        episode.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            if self.stream:
                await self._streamed(send, watcher, episode, queue)
            else:
                await self._plain(send, watcher, episode)
        finally:
            watcher.cancel()
            if not episode.done():  # this response was cancelled (a shutdown past its grace period)
                episode.cancel()
            self.release()

    async def _plain(self, send: Any, watcher: asyncio.Task[None], episode: asyncio.Task[Trajectory]) -> None:
        await asyncio.wait({episode, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not episode.done():
            await self._cancel(episode)
            return
        trajectory = await self._finished(episode)
        if trajectory is None:
            status, body = 500, error_body("The server failed while running the episode.", "server_error")
        else:
            status, body = self._outcome(trajectory)
        with contextlib.suppress(OSError):  # the client left after the episode ended: it is recorded anyway
            await send_json(send, status, body)

    async def _streamed(self, send: Any, watcher: asyncio.Task[None], episode: asyncio.Task[Trajectory],
                        queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        job_id = self.job.id
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            await _body(send, chunk(job_id, self.model, {"role": "assistant", "content": ""}))
            getter = asyncio.create_task(queue.get())
            while True:
                done, _ = await asyncio.wait({getter, watcher}, timeout=KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    getter.cancel()
                    await self._cancel(episode)
                    return
                if not done:
                    await _body(send, KEEPALIVE)
                    continue
                step = getter.result()
                if step is None:
                    break
                await _body(send, chunk(job_id, self.model, {}, orchestra={"step": step}))
                getter = asyncio.create_task(queue.get())
            trajectory = await self._finished(episode)
            if trajectory is None:
                events = [sse(error_body("The server failed while running the episode.", "server_error"))]
            elif trajectory.termination is Termination.ERROR:
                events = [sse(self._outcome(trajectory)[1])]
            else:
                events = final_chunks(trajectory, self.model, self.job.client_tools, self.include_usage)
            for event in [*events, DONE]:
                await _body(send, event)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we were writing
            await self._cancel(episode)

    async def _finished(self, episode: asyncio.Task[Trajectory]) -> Trajectory | None:
        """The episode's trajectory, recorded; None (logged) if the episode raised, which is a bug of ours."""
        try:
            trajectory = episode.result()
        except Exception as exc:  # noqa: BLE001 - one broken episode must not take the server down
            log.error("episode %s failed: %s", self.job.id, redact(f"{type(exc).__name__}: {exc}"))
            return None
        await self.record(trajectory, self.job)
        return trajectory

    def _outcome(self, trajectory: Trajectory) -> tuple[int, dict[str, Any]]:
        if trajectory.termination is Termination.ERROR:
            return 502, error_body(f"The orchestrator's model failed: {redact(trajectory.error or '')}",
                                   "upstream_error", "backend_error")
        if trajectory.termination is Termination.BUDGET and not trajectory.turns and self._key_bound():
            return 402, error_body("This API key's remaining budget cannot cover this request.", "insufficient_quota", "insufficient_quota")
        return 200, completion_body(trajectory, self.model, self.job.client_tools)

    def _key_bound(self) -> bool:
        """Whether the caller's key, rather than this episode's own cap, is what ran out."""
        cap = self.job.limits.budget_usd
        return cap is None or self.job.account.budget.remaining_usd < cap

    async def _cancel(self, episode: asyncio.Task[Trajectory]) -> None:
        started = time.perf_counter()
        episode.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await episode
        log.info("client of %s disconnected: episode cancelled in %.3f s", self.job.id,
                 time.perf_counter() - started)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _body(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})
