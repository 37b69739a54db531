"""How much a RouterBench policy fit on the training part can beat the fitted cascade on the held-apart part.

The demo's orchestrator imitates a policy fit on the training part (the consult-and-compare teacher) and is compared
with the fitted cascade and kNN router. A student can at best match its teacher, so the teacher's margin over the
cascade bounds what imitation can show. This script replays recorded outcomes only (no model runs, seconds):

- per split seed (the demo uses seed 0, dev_fraction 0.1), on the dev part: the fitted cascade and kNN router (the
  demo's baselines), the consult teacher at the demo's budget share (0.3 of always asking gpt-4), and the oracle;
- the same over `--splits` seeds, with the teacher's accuracy gain over the cascade and its cost ratio per split.

Last line: `ratio=<mean teacher accuracy / mean cascade accuracy over the splits>` (1.0 means no systematic gain).

    python bench/routing_ceiling.py [--data DIR] [--splits 10] [--dev-fraction 0.1]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from orchestra.envs.routerbench.baselines import (
    Outcomes,
    fit_cascades,
    fit_knn,
    oracle_model,
    simulate_cascade,
)
from orchestra.envs.routerbench.data import load_rows, split_rows
from orchestra.envs.routerbench.demonstrations import fit_consult_policy, score_route
from orchestra.paths import shared_data


def cascade_on(rows, train, models):
    chains = fit_cascades(train, models)
    total_acc = total_cost = 0.0
    for task_type, chain in chains.items():
        group = [r for r in rows if r.task_type == task_type]
        acc, cost = simulate_cascade(Outcomes.of(group, models), [models.index(m) for m in chain])
        total_acc, total_cost = total_acc + acc * len(group), total_cost + cost * len(group)
    return total_acc / len(rows), total_cost / len(rows)


def knn_on(rows, train, models, seed):
    """The kNN router as the demo fits it (k and lambda cross-validated on the training part)."""
    router = fit_knn(train, models, seed=seed)
    outcomes = Outcomes.of(rows, models)
    picks = [models.index(router.choose(f"Task: {r.task_type}\n{r.question}")) for r in rows]
    index = np.arange(len(rows))
    return float(outcomes.correct[index, picks].mean()), float(outcomes.cost_usd[index, picks].mean())


def teacher_on(rows, train, share):
    policy = fit_consult_policy(train, max_cost_share=share)
    total_acc = total_cost = 0.0
    for task_type in sorted({r.task_type for r in rows}):
        group = [r for r in rows if r.task_type == task_type]
        acc, cost = score_route(group, policy.route(task_type))
        total_acc, total_cost = total_acc + acc * len(group), total_cost + cost * len(group)
    return total_acc / len(rows), total_cost / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.3, help="The teacher's budget share (the demo's: 0.3).")
    parser.add_argument("--dev-fraction", type=float, default=0.1, help="Held-out share (the demo's: 0.1).")
    args = parser.parse_args()
    rows = load_rows(args.data or shared_data() / "routerbench")
    models = sorted({m for r in rows for m in r.records})
    print(f"{len(rows)} rows, {len(models)} models; dev_fraction {args.dev_fraction}; teacher budget share "
          f"{args.share}")
    print("split  dev  cascade acc  $/query   knn acc  $/query   teacher acc  $/query   gain (points)  cost ratio"
          "  oracle acc")
    cascades, teachers, gains, over_knn = [], [], [], []
    for seed in range(args.splits):
        train, dev = split_rows(rows, args.dev_fraction, seed)
        c_acc, c_cost = cascade_on(dev, train, models)
        k_acc, k_cost = knn_on(dev, train, models, seed)
        t_acc, t_cost = teacher_on(dev, train, args.share)
        oracle = statistics.fmean(dev_row.records[oracle_model(dev_row, models)].correct for dev_row in dev)
        cascades.append(c_acc)
        teachers.append(t_acc)
        gains.append(100 * (t_acc - c_acc))
        over_knn.append(100 * (t_acc - k_acc))
        print(f"{seed:5d} {len(dev):4d}  {c_acc:11.3f}  {c_cost:.6f}  {k_acc:7.3f}  {k_cost:.6f}  {t_acc:11.3f}  "
              f"{t_cost:.6f}  {gains[-1]:+13.1f}  {t_cost / c_cost:10.2f}  {oracle:10.3f}")
    spread = f" (sd {statistics.stdev(gains):.2f})" if len(gains) > 1 else ""
    print(f"mean gain {statistics.fmean(gains):+.2f} points{spread}; splits where the "
          f"teacher is above the cascade: {sum(g > 0 for g in gains)}/{len(gains)}; over the kNN router "
          f"{statistics.fmean(over_knn):+.2f} points, above it on {sum(g > 0 for g in over_knn)}/{len(over_knn)}")
    print(f"ratio={statistics.fmean(teachers) / statistics.fmean(cascades):.4f}")


if __name__ == "__main__":
    main()
