"""`orchestra demo-seeds` says "GRPO beats SFT" only when every seed gains by more than SFT's own spread."""

from orchestra.commands.demo_seeds import combine, results_markdown


def run(untrained, sft, grpo):
    runs = {label: {"accuracy": 0.5 + reward / 10, "cost_per_query_usd": 0.001}
            for label, reward in (("untrained", untrained), ("sft", sft), ("orchestra", grpo))}
    return {"runs": runs, "paper_reward": {"untrained": untrained, "sft": sft, "orchestra": grpo},
            "timings_s": {"total_s": 600.0}}


def test_a_gain_on_every_seed_beyond_the_sft_spread_is_reported_as_such():
    summary = combine({1: run(0.1, 0.50, 0.60), 2: run(0.1, 0.52, 0.61), 3: run(0.1, 0.51, 0.63)})
    text = results_markdown(summary)
    assert "| SFT + GRPO | 0.561 (0.560–0.563) |" in text
    assert "seed 1: +0.100, seed 2: +0.090, seed 3: +0.120" in text
    assert "Every seed gains, by more than SFT's own spread." in text
    assert summary["minutes"] == 30.0


def test_one_seed_losing_or_a_gain_within_the_spread_is_run_noise():
    losing = combine({1: run(0.1, 0.50, 0.60), 2: run(0.1, 0.52, 0.51)})
    assert "Not beyond run noise" in results_markdown(losing)
    within = combine({1: run(0.1, 0.40, 0.45), 2: run(0.1, 0.60, 0.65)})  # +0.05 each, SFT spread 0.20
    assert "Not beyond run noise" in results_markdown(within)


def test_the_untrained_run_is_handed_to_later_seeds_and_never_overwrites_one(tmp_path):
    from orchestra.commands.demo_seeds import share_untrained

    first, second = tmp_path / "seed-1", tmp_path / "seed-2"
    share_untrained(first, second)  # the first seed has not run yet: nothing to hand over
    assert not (second / "runs").exists()
    (first / "runs" / "untrained").mkdir(parents=True)
    (first / "runs" / "untrained" / "items.jsonl").write_text('{"id": "arc-1"}\n')
    share_untrained(first, first)
    share_untrained(first, second)
    assert (second / "runs" / "untrained" / "items.jsonl").read_text() == '{"id": "arc-1"}\n'
    (first / "runs" / "untrained" / "items.jsonl").write_text("changed\n")
    share_untrained(first, second)
    assert (second / "runs" / "untrained" / "items.jsonl").read_text() == '{"id": "arc-1"}\n'
