"""Train MuZero on a pool of synthetic cubes: `python -m experiments.train`.

Presets: `smoke` (well under a minute on 2 CPU cores), `cpu` (the default) and
`gpu`. Every important setting has a flag (`--help`); a flag given overrides
the preset. At the end the agent plays greedy episodes on held-out cubes
(generator seeds never used in training) and its findings are scored against
the planted truth, beside a random walk at the same budget and the exhaustive
oracle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Literal

import jax
import numpy as np
import tyro

import cube_env
import muzero_jax
from experiments import cube_task

PRESETS = {
    "smoke": dict(task=dict(num_train_cubes=2, num_eval_cubes=2, n_rows=2500, horizon=8, max_depth=2),
                  config=dict(channels=8, num_blocks=1, head_channels=4, latent_size=16, hidden_size=16,
                              num_simulations=4, max_num_considered_actions=4, num_envs=4, rollout_length=8,
                              replay_capacity=512, min_replay_size=32, batch_size=16, unroll_steps=3, n_step=3,
                              updates_per_iteration=2, warmup_steps=5, decay_steps=200), iterations=3),
    "cpu": dict(task=dict(num_train_cubes=8, num_eval_cubes=4, n_rows=4000, horizon=16, max_depth=3),
                config=dict(channels=16, num_blocks=1, head_channels=8, latent_size=32, hidden_size=32,
                            num_simulations=8, max_num_considered_actions=8, num_envs=8, rollout_length=8,
                            replay_capacity=8192, min_replay_size=128, batch_size=32, updates_per_iteration=4,
                            warmup_steps=20, decay_steps=5000), iterations=400),
    "gpu": dict(task=dict(num_train_cubes=64, num_eval_cubes=16, n_rows=20000, horizon=64, max_depth=3),
                config=dict(channels=64, num_blocks=4, num_simulations=32, num_envs=256, rollout_length=32,
                            replay_capacity=262144, batch_size=512, updates_per_iteration=16,
                            decay_steps=200000), iterations=2000),
}


@dataclasses.dataclass(frozen=True)
class Args:
  """Train a MuZero agent that explores healthcare data cubes for disparities."""

  preset: Literal["smoke", "cpu", "gpu"] = "cpu"
  """Size preset; the flags below override it."""
  iterations: int | None = None
  """Training iterations (self-play rollout + updates each)."""
  seed: int = 0
  """Seed of the agent (cubes come from fixed generator seeds)."""
  logdir: str | None = "runs/train"
  """TensorBoard directory (None to disable)."""
  checkpoint_dir: str | None = None
  """Orbax checkpoint directory (periodic saves)."""
  num_simulations: int | None = None
  """MCTS simulations per move."""
  search: Literal["gumbel", "muzero"] | None = None
  """mctx policy."""
  network: Literal["resnet", "mlp"] | None = None
  """Representation network."""
  num_envs: int | None = None
  """Environments stepped together in self-play."""
  batch_size: int | None = None
  """Learner batch size."""
  learning_rate: float | None = None
  """Peak learning rate."""
  num_train_cubes: int | None = None
  """Synthetic training cubes in the pool."""
  num_eval_cubes: int | None = None
  """Held-out evaluation cubes."""
  n_rows: int | None = None
  """Rows per synthetic cube."""
  horizon: int | None = None
  """Group-by queries per episode (the budget)."""
  eval_only: bool = False
  """Skip training (evaluate the initial agent)."""


def build(args: Args):
  preset = PRESETS[args.preset]
  task_kw = dict(preset["task"])
  for name in ("num_train_cubes", "num_eval_cubes", "n_rows", "horizon"):
    if getattr(args, name) is not None:
      task_kw[name] = getattr(args, name)
  task = cube_task.CubeTask(**task_kw)
  cfg_kw = dict(preset["config"])
  for name in ("num_simulations", "search", "network", "num_envs", "batch_size", "learning_rate"):
    if getattr(args, name) is not None:
      cfg_kw[name] = getattr(args, name)
  config = muzero_jax.MuZeroConfig(seed=args.seed, max_episode_steps=task.horizon, **cfg_kw)
  iterations = args.iterations if args.iterations is not None else preset["iterations"]
  return task, config, iterations


def evaluate(task, config, env, params, eval_set, eval_pool, *, seed: int = 0) -> list[dict]:
  """Greedy agent vs random walk on held-out cubes; findings scored against truth."""
  key = jax.random.PRNGKey(seed)
  agent = muzero_jax.evaluate(params, config, env, eval_pool, key)
  rnd_ret, rnd_actions = cube_task.random_walk(env, eval_pool, key, num_steps=task.horizon)
  rows = []
  agent_actions = np.asarray(agent.actions)
  for i, cube in enumerate(eval_set.cubes):
    one = jax.tree.map(lambda x, i=i: x[i], eval_pool)
    oracle = cube_task.cube_oracle(one, cube)
    truth = eval_set.truths[i]
    a = cube_task.score_episode(env, one, cube, truth, agent_actions[i], oracle)
    r = cube_task.score_episode(env, one, cube, truth, np.asarray(rnd_actions)[i], oracle)
    oracle_recall = cube_env.score_findings(oracle, truth, cube=cube)["recall"]
    rows.append(dict(scenario=eval_set.scenarios[i], seed=eval_set.seeds[i], agent_return=float(agent.returns[i]),
                     random_return=float(rnd_ret[i]), agent_recall=a["recall"], random_recall=r["recall"],
                     oracle_recall=oracle_recall, oracle_findings=len(oracle),
                     oracle_queries=oracle.attrs["queries"], budget=task.horizon))
  return rows


def run(args: Args) -> dict:
  task, config, iterations = build(args)
  t0 = time.perf_counter()
  train_set = cube_task.make_cubes(task, split="train")
  eval_set = cube_task.make_cubes(task, split="eval")
  env, (train_pool, eval_pool) = cube_task.make_pool(task, [train_set, eval_set])
  print(f"cubes: {len(train_set.cubes)} training (seeds {train_set.seeds[0]}..), {len(eval_set.cubes)} held-out "
        f"(seeds {eval_set.seeds[0]}..); grid {env.observation_shape}, {env.num_actions} actions; "
        f"{time.perf_counter() - t0:.1f} s")
  if args.eval_only:
    state = muzero_jax.make_train(config, env, train_pool).init()
  else:
    state = muzero_jax.train(config, env, train_pool, logdir=args.logdir, checkpoint_dir=args.checkpoint_dir,
                             num_iterations=iterations)
  rows = evaluate(task, config, env, state.params, eval_set, eval_pool, seed=args.seed)
  mean = lambda k: float(np.nanmean([r[k] for r in rows]))
  print("held-out evaluation (budget %d queries per cube):" % task.horizon)
  for r in rows:
    print(f"  {r['scenario']:>12} seed {r['seed']}: agent return {r['agent_return']:.0f} "
          f"(recall {r['agent_recall']:.2f}), random walk {r['random_return']:.0f} "
          f"(recall {r['random_recall']:.2f}), oracle recall {r['oracle_recall']:.2f} "
          f"with {r['oracle_queries']} queries")
  summary = dict(agent_return=mean("agent_return"), random_return=mean("random_return"),
                 agent_recall=mean("agent_recall"), random_recall=mean("random_recall"),
                 oracle_recall=mean("oracle_recall"), seconds=time.perf_counter() - t0)
  print("mean: " + json.dumps(summary))
  if args.logdir:
    os.makedirs(args.logdir, exist_ok=True)
    with open(os.path.join(args.logdir, "evaluation.json"), "w") as fh:
      json.dump({"summary": summary, "rows": rows}, fh, indent=1)
  return summary


def main(argv: list[str] | None = None) -> int:
  run(tyro.cli(Args, args=argv))
  return 0


if __name__ == "__main__":
  sys.exit(main())
