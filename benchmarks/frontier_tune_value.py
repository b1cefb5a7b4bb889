"""A value-focused variant of `frontier_tune` (benchmarks/README.md, *A value-focused tuning*; a diagnosis step).

    python benchmarks/frontier_tune_value.py POSITIONS.npz OUT.npz

From the cached positions of `python -m experiments.agent.frontier_tune` (the same walks), fine-tunes the packaged
agent with the value term taught on the marked positions only (the unmarked positions' sampled moves weigh 0 in it:
their marks are all 0 and teach no order among a cohort's moves) and weighted 4x, for 2,000 steps, seed 0.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import muzero_jax
from experiments.agent import frontier_tune
from experiments.agent.loading import export_agent, load_agent


def main() -> None:
  positions, out = sys.argv[1:3]
  walked = frontier_tune.load_positions(positions)
  marked_only = [
    (f, i, dataclasses.replace(p, weights=p.weights * p.marked.any(axis=1, keepdims=True))) for f, i, p in walked
  ]
  groups = frontier_tune.groups_by_shape(marked_only)
  agent = load_agent(None)
  tune = muzero_jax.FineTuneConfig(steps=2000, value_weight=4.0)
  params, _ = muzero_jax.fine_tune(agent.params, agent.config, groups, seed=0, tune=tune, log=frontier_tune.print_terms)
  source = {"from": "pretrained.npz", "frontier_tune_value": {"positions": positions, "steps": 2000, "value": 4.0}}
  export_agent(dataclasses.replace(agent, params=params, source=json.dumps(source)), out)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
