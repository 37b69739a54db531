"""One GRPO step: orchestra's rollout path against TRL's built-in multi-turn tool loop, same model, batch and limits.

Both paths train the same tiny random Qwen3 policy (LoRA as `train_grpo` builds it; the same TRL `GRPOTrainer`
optimizer side and settings) on the same RouterBench replay tasks, `prompts_per_step` tasks x `group_size` rollouts
per step:
(a) ours: `orchestra.train.grpo_trl.train_grpo` with a `LocalBackend`; its `rollout_func` runs the episodes through
    orchestra's episode loop and the backend batches the concurrent episodes' turns into one model batch;
(b) TRL: `GRPOTrainer(environment_factory=...)` whose environment exposes `ask(model)` (the recorded answer letter) and
    `answer(model)` as typed, Google-docstring methods; TRL generates each turn for all rollouts still calling tools
    with one `model.generate`, parses tool calls with the tokenizer's `response_template` (TRL's Qwen3 one, which
    reads hermes `<tool_call>{json}</tool_call>`), runs the tools and generates again.

A random policy writes no parseable tool call, so both paths would be single-turn. The policy is first taught, by
supervised steps on encoded conversations (30-80 s on the shared 2-core machine), one script: ask a cheap model, ask
a strong one, answer with one of them; so episodes take three turns in both paths. TRL has no terminal tool (its loop
stops when a reply has no tool call or at `max_tool_calling_iterations`); with that cap at max_turns - 1 the third
turn's `answer` call ends the TRL rollout unexecuted and the reward reads it from the parsed completion, while ours
executes it and stops. Differences that remain are the paths' own: after a malformed call ours returns an error
observation and the model gets another turn, TRL ends the rollout; ours drops finished rows from the batch and keeps
each conversation's attention cache across turns (a later turn prefills only the tool result and template text),
TRL keeps finished rows until the longest row ends and prefills the whole conversation again every turn.

Prompts are identical token for token: the compact prompt, rendered by one Qwen-style template
(`CHATML_TOOLS_TEMPLATE` extended to render assistant `tool_calls`, which TRL's `supports_tool_calling` requires),
with the tool schemas left out (ours: `render_tools=False`, as trained orchestrators run; TRL: a template that ignores
`tools=`). `--tool-schemas` renders them natively in both (TRL's docstrings carry our descriptions; ~5x longer
prompts, several times slower).

Timing (both paths through the same `GRPOTrainer` subclass): rollout = `_generate` (ours: the whole `rollout_func`;
TRL: tokenizing, all turns, tool calls); step = `on_step_begin` to `on_step_end` (rollout, rewards, reference and
policy forward/backward, optimizer). The first `--warmup` steps are not timed. torch runs one intra-op thread by
default: on the shared 2-core machine two threads made the same generation 3-20x slower and erratic.

Usage: `python bench/grpo_step.py [--group-size 8] [--prompts-per-step 4] [--max-tokens 48] [--max-turns 3]
[--steps 3] [--warmup 1] [--hidden-size 64] [--script-steps 80] [--threads 1] [--trl-first] [--tool-schemas]`.
The last line printed is `ratio=<our rollout episodes/s / TRL rollout episodes/s>`.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

from orchestra.backends.local import LocalBackend  # noqa: E402
from orchestra.backends.tiny import CHATML_TOOLS_TEMPLATE, tiny_model, tiny_tokenizer  # noqa: E402
from orchestra.envs.base import Example  # noqa: E402
from orchestra.envs.registry import load_suite  # noqa: E402
from orchestra.envs.routerbench.env import RouterBench, show_answer  # noqa: E402
from orchestra.envs.routerbench.prompt import compact_prompt  # noqa: E402
from orchestra.train.config import GRPOConfig  # noqa: E402
from orchestra.train.data import encode_conversation  # noqa: E402
from orchestra.train.sft import lora_config  # noqa: E402
from orchestra.types import Message, ToolCall  # noqa: E402

_PLAIN_TURN = "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
_ASSISTANT_TURN = (
    "{% elif message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' + message['content'] }}"
    "{% for call in message.tool_calls or [] %}{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<tool_call>\\n' + {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson"
    " + '\\n</tool_call>' }}{% endfor %}{{ '<|im_end|>\\n' }}"
)
assert _PLAIN_TURN in CHATML_TOOLS_TEMPLATE
BENCH_TEMPLATE = CHATML_TOOLS_TEMPLATE.replace(_PLAIN_TURN, _ASSISTANT_TURN + _PLAIN_TURN)
"""CHATML_TOOLS_TEMPLATE plus hermes rendering of assistant `tool_calls` (TRL's `supports_tool_calling` check)."""
assert BENCH_TEMPLATE.startswith("{% if tools %}")
NO_SCHEMAS_TEMPLATE = BENCH_TEMPLATE.replace("{% if tools %}", "{% if tools and false %}", 1)
"""BENCH_TEMPLATE that leaves `tools=` out of the prompt (what ours does with `render_tools=False`)."""

CHEAP = ("mistral-7b", "wizardlm-13b", "mixtral", "codellama-34b")
STRONG = ("gpt-4", "claude-1", "yi-34b", "gpt-3.5")


@dataclass
class Recorder:
    """Per timed step: wall time, rollout time, episodes, model generations (rows) and model-written tokens."""

    rows: Any = None
    """() -> (model batches, generation rows, prompt tokens not prefilled) so far (ours: the backend's counters;
    TRL: counted in `_generate_single_turn`, which re-prefills every turn)."""
    step_s: list[float] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    rollout_cpu_s: list[float] = field(default_factory=list)
    step_cpu_s: list[float] = field(default_factory=list)
    episodes: list[int] = field(default_factory=list)
    generations: list[int] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    kv_reused: list[int] = field(default_factory=list)
    longest: list[int] = field(default_factory=list)
    model_tokens: list[int] = field(default_factory=list)
    prompt_tokens: list[float] = field(default_factory=list)
    tasks: list[list[str]] = field(default_factory=list)
    trl_batches: int = 0
    trl_rows: int = 0


def timed_trainer_class(recorder: Recorder) -> type:
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    class StepTimer(TrainerCallback):
        started = (0.0, 0.0)

        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            StepTimer.started = (time.perf_counter(), time.process_time())

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            recorder.step_s.append(time.perf_counter() - StepTimer.started[0])
            recorder.step_cpu_s.append(time.process_time() - StepTimer.started[1])

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.add_callback(StepTimer())

        def _generate_single_turn(self, prompt_ids: Any, *args: Any, **kwargs: Any) -> Any:
            recorder.trl_batches += 1
            recorder.trl_rows += len(prompt_ids)
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> Any:
            recorder.tasks.append(sorted({str(x.get("task_id", x["prompt"])) for x in inputs}))  # ours: prompt = id
            return super()._generate_and_score_completions(inputs)

        def _generate(self, prompts: list) -> Any:
            batches_before, rows_before, reused_before = recorder.rows()
            started, cpu_started = time.perf_counter(), time.process_time()
            out = super()._generate(prompts)
            recorder.rollout_s.append(time.perf_counter() - started)
            recorder.rollout_cpu_s.append(time.process_time() - cpu_started)
            prompt_ids, completion_ids, tool_mask = out[0], out[1], out[2]
            recorder.episodes.append(len(prompts))
            batches_after, rows_after, reused_after = recorder.rows()
            recorder.generations.append(rows_after - rows_before)
            recorder.batches.append(batches_after - batches_before)
            recorder.kv_reused.append(reused_after - reused_before)
            recorder.longest.append(max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True)))
            masks = tool_mask if tool_mask is not None else [[1] * len(c) for c in completion_ids]
            recorder.model_tokens.append(sum(sum(m) for m in masks))
            recorder.prompt_tokens.append(statistics.fmean(len(p) for p in prompt_ids))
            return out

    return TimedGRPOTrainer


def build_tokenizer(env: RouterBench, examples: list[Example], *, with_parser: bool, schemas: bool) -> Any:
    """The tiny BPE tokenizer with merges trained on this run's prompts and tool schemas (compact prompts)."""
    specs = [t.spec for t in env.start(examples[0].task).tools]
    corpus = [m.content for e in examples for m in compact_prompt(e.task, specs, e.preferences)]
    corpus += [s.description for s in specs]
    corpus += [f'{{"name": "ask", "arguments": {{"model": "{m}"}}}}' for m in env.models]
    template = BENCH_TEMPLATE if schemas else NO_SCHEMAS_TEMPLATE
    tokenizer = tiny_tokenizer(template, vocab_size=1024, extra_corpus=tuple(corpus))
    tokenizer.padding_side = "left"
    if with_parser:
        from trl.chat_template_utils import qwen3_template

        tokenizer.response_template = qwen3_template  # parses hermes <tool_call>{json}</tool_call> replies
    return tokenizer


def script_conversation(env: RouterBench, example: Example, rng: random.Random) -> tuple[list[Message], list[Any]]:
    """ask(cheap) -> ask(strong) -> answer(one of them), rendered as ours renders it."""
    row = env.row(example.task.id)
    specs = [t.spec for t in env.start(example.task).tools]
    first, second = rng.choice(CHEAP), rng.choice(STRONG)
    messages = compact_prompt(example.task, specs, example.preferences)
    for i, (name, model) in enumerate([("ask", first), ("ask", second), ("answer", rng.choice([first, second]))]):
        messages.append(Message("assistant", "", tool_calls=(ToolCall(f"c{i}", name, {"model": model}),)))
        if name == "ask":
            rec = row.records.get(model)
            seen = show_answer(rec.response, row.task_type != "mbpp") if rec else f"{model} is unavailable"
            messages.append(Message("tool", seen, tool_call_id=f"c{i}", name=name))
    return messages, specs


def teach_script(model: Any, tokenizer: Any, env: RouterBench, examples: list[Example], *, steps: int,
                 seed: int, schemas: bool) -> float:
    """Supervised steps on script conversations (loss on the assistant tokens only); returns the last loss."""
    backend = LocalBackend(model, tokenizer, render_tools=schemas)
    rng = random.Random(seed)
    encoded = [encode_conversation(backend, *script_conversation(env, e, rng)) for e in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        batch = rng.sample(encoded, min(8, len(encoded)))
        width = max(len(x.ids) for x in batch)
        ids = torch.tensor([list(x.ids) + [0] * (width - len(x.ids)) for x in batch])
        labels = torch.tensor([[i if m else -100 for i, m in zip(x.ids, x.mask, strict=True)] + [-100] * (
            width - len(x.ids)) for x in batch])
        attention = torch.tensor([[1] * len(x.ids) + [0] * (width - len(x.ids)) for x in batch])
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def grpo_config(args: argparse.Namespace, output_dir: Path) -> GRPOConfig:
    return GRPOConfig.model_validate({
        "envs": [{"name": "routerbench", "dev_fraction": 0.2, "max_tasks": args.tasks}],
        "output_dir": str(output_dir), "steps": args.warmup + args.steps, "group_size": args.group_size,
        "prompts_per_step": args.prompts_per_step, "temperature": 1.0, "max_turns": args.max_turns,
        "max_tokens_per_turn": args.max_tokens, "seed": args.seed, "checkpoint": {"every_steps": 10_000},
        "balance_tasks": False,  # the tasks as sampled, the same list TRL's path gets
    })


def run_ours(args: argparse.Namespace, model: Any, tokenizer: Any, out: Path) -> Recorder:
    import trl

    from orchestra.train.grpo_trl import train_grpo

    backend = LocalBackend(model, tokenizer, max_batch_size=args.group_size * args.prompts_per_step,
                           render_tools=args.tool_schemas, seed=args.seed)
    recorder = Recorder(rows=lambda: (backend.stats.generate_calls, backend.stats.rows, backend.stats.kv_reused_tokens))
    original = trl.GRPOTrainer
    trl.GRPOTrainer = timed_trainer_class(recorder)  # train_grpo imports it at call time
    try:
        train_grpo(grpo_config(args, out), backend=backend)
    finally:
        trl.GRPOTrainer = original
    return recorder


def trl_environment(env: RouterBench) -> type:
    """The RouterBench task as TRL wants it: an object with reset() and typed, Google-docstring tool methods."""
    ask_doc, answer_doc = (t.spec.description for t in env.start(env.task(env.rows[0])).tools)

    class RouterBenchTools:
        def __init__(self) -> None:
            self.row: Any = None
            self.answered: str | None = None

        def reset(self, **example: Any) -> None:
            self.row, self.answered = env.row(example["task_id"]), None

        def ask(self, model: str) -> str:
            rec = self._record(model)
            return show_answer(rec.response, self.row.task_type != "mbpp")

        def answer(self, model: str) -> str:
            self.answered = model
            return self._record(model).response

        def _record(self, model: str) -> Any:
            if model not in self.row.records:
                raise ValueError(f"{model} is unavailable for this question")
            return self.row.records[model]

    RouterBenchTools.ask.__doc__ = f"{ask_doc}\n\nArgs:\n    model: the model to ask\n"
    RouterBenchTools.answer.__doc__ = f"{answer_doc}\n\nArgs:\n    model: the model whose answer is final\n"
    return RouterBenchTools


def routerbench_reward(completions: list[list[dict]], environments: list[Any], **_: Any) -> list[float]:
    """1 when the answered model's recorded answer is correct: the executed answer(), else the last answer call."""
    rewards = []
    for messages, environment in zip(completions, environments, strict=True):
        model = environment.answered
        for message in messages if model is None else ():
            for call in message.get("tool_calls") or ():
                if call.get("function", {}).get("name") == "answer":
                    model = (call["function"].get("arguments") or {}).get("model")
        record = environment.row.records.get(model) if isinstance(model, str) else None
        rewards.append(float(record is not None and record.correct))
    return rewards


def run_trl(args: argparse.Namespace, model: Any, tokenizer: Any, env: RouterBench, examples: list[Example],
            out: Path) -> Recorder:
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig as TRLConfig

    config = grpo_config(args, out)
    recorder = Recorder()
    recorder.rows = lambda: (recorder.trl_batches, recorder.trl_rows, 0)
    rows = [{"prompt": [m.to_openai() for m in compact_prompt(e.task, [], e.preferences)], "task_id": e.task.id}
            for e in examples]
    trl_args = TRLConfig(
        output_dir=str(out / "checkpoints"), max_steps=config.steps,
        per_device_train_batch_size=config.group_size * config.prompts_per_step, gradient_accumulation_steps=1,
        num_generations=config.group_size, learning_rate=config.learning_rate, epsilon=config.clip_low,
        epsilon_high=config.clip_high, beta=config.kl_coef, loss_type="dapo", scale_rewards="group",
        # TRL drops a tool result that would take the completion past this cap and ends the rollout there; our
        # rollout_func is not capped by it. The cap ours passes (turns x (tokens + 64)) ended a quarter of the TRL
        # rollouts early on MBPP code answers, so it is set high enough for three full turns here.
        temperature=config.temperature, max_completion_length=1024,
        generation_kwargs={"max_new_tokens": config.max_tokens_per_turn},
        max_tool_calling_iterations=config.max_turns - 1, logging_steps=1, save_steps=10_000, report_to=[],
        use_cpu=True, bf16=False, seed=config.seed, data_seed=config.seed, remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=True,
        gradient_checkpointing=config.gradient_checkpointing,  # the same backward pass as ours
    )
    trainer = timed_trainer_class(recorder)(
        model=model, reward_funcs=[routerbench_reward], args=trl_args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, environment_factory=trl_environment(env),
        peft_config=lora_config(config.lora, model.config.num_hidden_layers),  # the adapter train_grpo builds
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return recorder


@dataclass(frozen=True)
class Summary:
    episodes_per_s: float
    episodes_per_cpu_s: float
    step_s: float
    step_cpu_s: float
    rollout_s: float
    generations_per_episode: float
    model_tokens_per_episode: float
    prompt_tokens: float
    longest_tokens: float
    batches_per_step: float
    kv_reused_per_step: float


def summarize(recorder: Recorder, warmup: int) -> Summary:
    timed = slice(warmup, None)
    episodes = sum(recorder.episodes[timed])
    return Summary(
        episodes_per_s=episodes / sum(recorder.rollout_s[timed]),
        episodes_per_cpu_s=episodes / sum(recorder.rollout_cpu_s[timed]),
        step_s=statistics.fmean(recorder.step_s[timed]),
        step_cpu_s=statistics.fmean(recorder.step_cpu_s[timed]),
        rollout_s=statistics.fmean(recorder.rollout_s[timed]),
        generations_per_episode=sum(recorder.generations[timed]) / episodes,
        model_tokens_per_episode=sum(recorder.model_tokens[timed]) / episodes,
        prompt_tokens=statistics.fmean(recorder.prompt_tokens[timed]),
        longest_tokens=statistics.fmean(recorder.longest[timed]),
        batches_per_step=statistics.fmean(recorder.batches[timed]),
        kv_reused_per_step=statistics.fmean(recorder.kv_reused[timed]),
    )


def describe(name: str, s: Summary, recorder: Recorder, warmup: int) -> str:
    steps = ", ".join(f"{x:.2f}" for x in recorder.step_s[warmup:])
    return (f"{name}: {s.episodes_per_s:6.1f} episodes/s (rollout {s.rollout_s:.2f} s/step; "
            f"{s.episodes_per_cpu_s:.1f} per CPU-s), step {s.step_s:.2f} s [{steps}] ({s.step_cpu_s:.2f} CPU-s); "
            f"{s.generations_per_episode:.2f} turns/episode, {s.model_tokens_per_episode:.1f} model "
            f"tokens/episode, {s.batches_per_step:.1f} model batches/step, first prompt {s.prompt_tokens:.0f} "
            f"tokens, longest sequence {s.longest_tokens:.0f} tokens, {s.kv_reused_per_step:.0f} prompt tokens/step "
            "not prefilled again (attention cache kept across turns)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48, help="generated tokens per turn")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--tool-schemas", action="store_true",
                        help="render the tool schemas into both prompts (several times longer prompts)")
    parser.add_argument("--script-steps", type=int, default=80, help="supervised steps teaching the script")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-first", action="store_true", help="run the TRL path before ours")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (2 threads on the shared 2-core machine ran 3-20x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames
    # ours drops low-variance groups as None rewards; TRL warns once per step about each such batch
    logging.getLogger("trl.trainer.grpo_trainer").setLevel(logging.ERROR)
    args.tasks = 2 * args.prompts_per_step * (args.warmup + args.steps)
    started = time.perf_counter()

    suite = load_suite(grpo_config(args, Path(".")).envs[0].config)
    env = suite.training_env
    examples = suite.training_examples(args.seed, args.tasks)
    tokenizer = build_tokenizer(env, examples, with_parser=False, schemas=args.tool_schemas)
    torch.manual_seed(args.seed)
    model = tiny_model(tokenizer, seed=args.seed, hidden_size=args.hidden_size)
    taught = time.perf_counter()
    loss = teach_script(model, tokenizer, env, examples, steps=args.script_steps, seed=args.seed,
                        schemas=args.tool_schemas)
    params = sum(p.numel() for p in model.parameters())
    lora_rank = grpo_config(args, Path(".")).lora.rank
    print(f"grpo_step: {args.prompts_per_step} tasks x {args.group_size} rollouts = "
          f"{args.prompts_per_step * args.group_size} episodes/step, <= {args.max_turns} turns x {args.max_tokens} "
          f"tokens, temperature 1.0; tiny Qwen3 hidden {args.hidden_size} ({params / 1e6:.2f}M params), "
          f"LoRA r{lora_rank}; {args.warmup} warm-up + {args.steps} timed steps; "
          f"torch threads {torch.get_num_threads()}")
    print(f"script taught in {time.perf_counter() - taught:.1f} s ({args.script_steps} steps, final loss {loss:.3f})")

    trl_tokenizer = build_tokenizer(env, examples, with_parser=True, schemas=args.tool_schemas)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "ours": lambda: run_ours(args, copy.deepcopy(model), tokenizer, Path(tmp) / "ours"),
            "trl": lambda: run_trl(args, copy.deepcopy(model), trl_tokenizer, env, examples, Path(tmp) / "trl"),
        }
        done = {name: paths[name]() for name in (["trl", "ours"] if args.trl_first else ["ours", "trl"])}
    ours, theirs = done["ours"], done["trl"]
    a, b = summarize(ours, args.warmup), summarize(theirs, args.warmup)
    print(describe("ours", a, ours, args.warmup))
    print(describe("TRL ", b, theirs, args.warmup))
    print(f"same tasks in every step: {'yes' if ours.tasks == theirs.tasks else 'NO'}")
    print(f"rollout episodes/s, ours / TRL: {a.episodes_per_s / b.episodes_per_s:.2f} (above 1: ours faster)")
    print(f"step time, TRL / ours: {b.step_s / a.step_s:.2f} (above 1: ours faster)")
    print(f"by process CPU time (less sensitive to other jobs): episodes/s ours / TRL "
          f"{a.episodes_per_cpu_s / b.episodes_per_cpu_s:.2f}, step TRL / ours {b.step_cpu_s / a.step_cpu_s:.2f}")
    print(f"total wall {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print(f"ratio={a.episodes_per_s / b.episodes_per_s:.3f}")


if __name__ == "__main__":
    main()
