"""Golden demonstrations for τ²-format domains: a task's golden actions as the orchestrator's own transcript.

Solo mode: the scripted agent makes the task's assistant-side golden calls one per turn, in order, reading each real
observation (the calls run on the episode's own database through the real episode loop, so the transcript is exactly
what a trained orchestrator will see), then writes a final message to the customer that states every
`communicate_info` item. Only demonstrations that grade solved are kept: a golden action that fails, or a task whose
outcome needs more than the golden calls (e.g. a user-side action), yields no demonstration.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestra.backends.scripted import ScriptedBackend
from orchestra.envs.base import Demonstration, Example
from orchestra.envs.tau.env import TauEnvironment
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings, run_task
from orchestra.toolcalls import render_hermes
from orchestra.types import Message


def final_message(info: Sequence[str]) -> str:
    """The closing message: done, plus each piece of information the customer must be told."""
    if not info:
        return "All done: your request has been handled."
    return "All done. " + " ".join(f"{item.rstrip('.')}." for item in info)


def golden_agent(env: TauEnvironment, example: Example) -> ScriptedBackend:
    """A scripted orchestrator replaying the task's assistant-side golden calls, then the final message."""
    spec = env.spec(example.task)
    calls = [a for a in spec.actions if a.requestor == "assistant"]

    def act(messages: Sequence[Message]) -> str:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn < len(calls):
            return render_hermes(calls[turn].name, dict(calls[turn].arguments))
        return final_message(spec.communicate_info)

    return ScriptedBackend(act, model="golden")


async def golden_demonstrations(env: TauEnvironment, examples: Sequence[Example],
                                settings: EpisodeSettings) -> list[Demonstration]:
    """The solved golden transcripts of `examples` (unsolvable ones are left out)."""
    out = []
    for example in examples:
        spec = env.spec(example.task)
        turns = sum(1 for a in spec.actions if a.requestor == "assistant") + 1
        run = EpisodeSettings(limits=Limits(max_turns=max(turns, settings.limits.max_turns)),
                              sampling=settings.sampling, build_prompt=settings.build_prompt,
                              render_observation=settings.render_observation)
        result = await run_task(env, example.task, golden_agent(env, example), run,
                                preferences=example.preferences)
        if result.outcome.solved:
            out.append((example, result.trajectory))
    return out
