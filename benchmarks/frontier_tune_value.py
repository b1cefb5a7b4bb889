"""A value-focused variant of `frontier_tune` (benchmarks/README.md, *A value-focused tuning*; a diagnosis step).

    python benchmarks/frontier_tune_value.py POSITIONS.npz OUT.npz

From the cached positions of `python -m experiments.agent.frontier_tune` (the same walks), fine-tunes the packaged
agent with the value term taught on the marked positions only (the unmarked positions' sampled moves weigh 0 in it:
their marks are all 0 and teach no order among a cohort's moves) and weighted 4x, for 2,000 steps, seed 0. A
positions file written before the walk's own score was stored (`ranking.Positions.scores`) loads with scores 0
(the fine-tuning does not read them).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np

import muzero_jax
from cube_env.discovery import ranking
from experiments.agent import frontier_tune
from experiments.agent.loading import export_agent, load_agent


def load(path: str) -> list:
  with np.load(path) as z:
    names = json.loads(str(z["worlds"]))
    out = []
    for k, (f, i) in enumerate(names):
      fields = [z[f"{k}/{x}"] for x in frontier_tune.FIELDS]
      scores = z[f"{k}/scores"] if f"{k}/scores" in z.files else np.zeros(len(fields[0]))
      out.append((f, i, ranking.Positions(*fields, scores)))
  return out


def main() -> None:
  positions, out = sys.argv[1:3]
  walked = load(positions)
  marked_only = [
    (f, i, dataclasses.replace(p, weights=p.weights * p.marked.any(axis=1, keepdims=True))) for f, i, p in walked
  ]
  groups = frontier_tune.groups_by_shape(marked_only)
  agent = load_agent(None)
  tune = muzero_jax.FineTuneConfig(steps=2000, value_weight=4.0)

  def log(step, terms):
    print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), flush=True)

  params, _ = muzero_jax.fine_tune(agent.params, agent.config, groups, seed=0, tune=tune, log=log)
  source = {"from": "pretrained.npz", "frontier_tune_value": {"positions": positions, "steps": 2000, "value": 4.0}}
  export_agent(dataclasses.replace(agent, params=params, source=json.dumps(source)), out)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
