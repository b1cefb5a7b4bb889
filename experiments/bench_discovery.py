"""Discovery quality per method and budget on synthetic cubes: `python -m experiments.bench_discovery`.

For each scenario, generator seed, method and budget, runs the whole
discovery (split, search, confirmation) and scores the candidates and the
confirmed findings against the planted truth. Prints one JSON line per run
and a table of mean recall and precision of the confirmed findings (on
`null` cubes, the share of seeds with any confirmed finding).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
import pandas as pd
import tyro

import cube_env
from cube_env import synthetic
from experiments import cube_task


@dataclasses.dataclass(frozen=True)
class Args:
  """Recall and precision per discovery method at several query budgets."""

  scenarios: tuple[str, ...] = ("interactions", "masked", "null")
  seeds: tuple[int, ...] = (7000, 7001)
  """Generator seeds (disjoint from the training and evaluation seeds of experiments.train)."""
  methods: tuple[str, ...] = ("random", "greedy", "beam", "uct", "exhaustive")
  budgets: tuple[int, ...] = (100, 1000)
  n_rows: int = 20000
  max_depth: int = 3
  checkpoint: str | None = None
  """A trained agent: adds the muzero method."""
  out: str | None = None
  """Also write the JSON lines here."""


def one_run(df, truth, method, budget: int, args: Args, seed: int) -> dict:
  t0 = time.perf_counter()
  run = cube_env.run_discovery(
    df, cube_task.TASK_SCHEMA, method=method, budget=budget, max_depth=args.max_depth, seed=seed
  )
  score = cube_env.truth_score(run, truth)
  return {
    "queries": run.search.queries,
    "seconds": round(time.perf_counter() - t0, 2),
    "candidates": len(run.findings),
    "confirmed": int(run.findings["confirmed"].sum()) if len(run.findings) else 0,
    "recall": score["confirmed"]["recall"],
    "precision": score["confirmed"]["precision"],
    "candidate_recall": score["candidates"]["recall"],
    "candidate_precision": score["candidates"]["precision"],
  }


def main(argv: list[str] | None = None) -> int:
  args = tyro.cli(Args, args=argv)
  methods: dict = {m: m for m in args.methods}
  if args.checkpoint is not None:
    from experiments import agent_search

    methods["muzero"] = agent_search.muzero_method(args.checkpoint)
  rows = []
  sink = open(args.out, "w") if args.out else None
  for scenario in args.scenarios:
    for seed in args.seeds:
      df, _, truth = synthetic.make_cases(scenario, seed, n_rows=args.n_rows)
      for name, method in methods.items():
        for budget in (10**7,) if name == "exhaustive" else args.budgets:
          row = dict(
            scenario=scenario, seed=seed, method=name, budget=budget, **one_run(df, truth, method, budget, args, seed)
          )
          rows.append(row)
          line = json.dumps(row)
          print(line, flush=True)
          if sink:
            sink.write(line + "\n")
            sink.flush()
  if sink:
    sink.close()
  table = pd.DataFrame(rows)
  table["any_confirmed"] = table["confirmed"] > 0
  summary = table.groupby(["scenario", "method", "budget"]).agg(
    queries=("queries", "mean"),
    recall=("recall", "mean"),
    precision=("precision", lambda s: np.nanmean(s) if s.notna().any() else np.nan),
    seeds_with_findings=("any_confirmed", "mean"),
    seconds=("seconds", "mean"),
  )
  with pd.option_context("display.width", 200):
    print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
