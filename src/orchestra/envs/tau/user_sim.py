"""The simulated user of τ²-format tasks, exposed to the agent as a tool.

Design choice: the episode loop (`run_episode`) has one speaker, the orchestrator, and ends when it replies without
a tool call. Rather than change the loop, the user is a tool: the agent calls `ask_user(message)` with what it says
to the customer, and the customer's reply comes back as that call's observation. The agent's final message (no tool
call) closes the conversation. So solo and simulated-user episodes run through the same loop, the conversation with
the user is part of the trajectory (and of the tokens training sees), and grading reads the agent's `ask_user`
messages as things it told the user.

The simulator is any `ChatBackend` playing the customer from the task's scenario. Roles are mirrored in its own
conversation: the agent's messages arrive as `user`, its replies are `assistant`. It may call its own tools (the
customer's phone or inbox, bound to the same episode database) for up to `max_steps` completions per reply; those
calls are recorded in `actions` for the ACTION criterion. When the customer is done it writes `###STOP###`; later
`ask_user` calls get a note that the customer has left. Its spend is kept in `cost_usd` (environment spend,
reported apart from the orchestrator's). Calls are serialized with a lock, so two `ask_user` calls in one turn
cannot interleave the customer's conversation.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.toolcalls import strip_think
from orchestra.tools.spec import Tool, tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message

STOP = "###STOP###"
USER_SAMPLING = Sampling(max_tokens=512)
"""Default sampling of the simulated user (greedy, short replies)."""
LEFT = "(the customer has left the conversation; reply with your final message)"

SYSTEM = (
    "You are playing a customer who contacts customer service. Follow the scenario below. Say only what the "
    "customer says, one request at a time; share information only when it is asked for or needed, and never invent "
    "facts the scenario does not give. {tools}When your request has been fully handled, or you are transferred to a "
    "human agent, or you cannot go on, reply with " + STOP + " alone."
)
TOOLS_NOTE = ("You have tools that act on your own device or account; use them when the agent asks you to or your "
              "scenario says so, and report their results truthfully, never made up. ")


class UserSimulator:
    """A `ChatBackend` playing the customer of one task; `tool()` is the agent's `ask_user`."""

    def __init__(self, backend: ChatBackend, scenario: str, *, persona: str | None = None,
                 tools: Sequence[Tool] = (), history: str = "", sampling: Sampling = USER_SAMPLING,
                 max_steps: int = 8, task_id: str = ""):
        system = SYSTEM.format(tools=TOOLS_NOTE if tools else "") + f"\n\nScenario:\n{scenario}"
        if persona:
            system += f"\n\nPersona: {persona}"
        if history:
            system += f"\n\nThe conversation so far (you are the customer):\n{history}"
        self.backend = backend
        self.messages: list[Message] = [Message("system", system)]
        self.toolbox = Toolbox.of(tools)
        self.sampling = sampling
        self.max_steps = max_steps
        self.task_id = task_id
        self.done = False
        self.cost_usd = 0.0
        self.actions: list[tuple[str, Mapping[str, Any]]] = []
        self._lock = asyncio.Lock()

    async def reply(self, agent_message: str) -> str:
        """The customer's answer to `agent_message` (after any tool calls of their own)."""
        async with self._lock:
            if self.done:
                return LEFT
            self.messages.append(Message("user", agent_message))
            text = ""
            for _ in range(self.max_steps):
                completion = await self.backend.complete(self.messages, self.toolbox.specs(), self.sampling)
                self.cost_usd += completion.cost_usd
                self.messages.append(Message("assistant", completion.text, tool_calls=completion.tool_calls))
                text = strip_think(completion.text)
                if not completion.tool_calls:
                    break
                observations = await self.toolbox.call_many(completion.tool_calls, task_id=self.task_id)
                for call, observation in zip(completion.tool_calls, observations, strict=True):
                    if observation.status == "ok":
                        self.actions.append((call.name, call.arguments))
                    self.messages.append(Message("tool", observation.content, tool_call_id=observation.call_id,
                                                 name=observation.name))
            if STOP in text:
                self.done = True
                text = text.replace(STOP, "").strip()
                return f"{text}\n{LEFT}" if text else LEFT
            return text or "(the customer says nothing)"

    def tool(self) -> Tool:
        """`ask_user(message)` bound to this simulator."""

        async def call(message: str) -> str:
            return await self.reply(message)

        return replace(_ask_user_template(), fn=call)


def _ask_user(message: str) -> str:
    """Say something to the customer and get their reply (the only way to talk to them).

    Args:
        message: What you say to the customer.
    """
    raise RuntimeError("ask_user template used without a simulator")


@functools.cache
def _ask_user_template() -> Tool:
    # a remote simulator may call its own tools several times per reply: allow more than the default 60 s
    return tool(_ask_user, name="ask_user", timeout_s=300.0)
