"""CartPole measured: compiled throughput of a config, and training until solved (`experiments.benchmark cartpole`)."""

from __future__ import annotations

import os

import muzero_jax
from experiments.control.cartpole import CartPoleTask, make_cartpole
from experiments.control.evaluation import PeriodicEvaluation

__all__ = ["solve", "speed"]


def speed(config: muzero_jax.MuZeroConfig, env, pool, *, repeats: int = 3) -> list[dict]:
  """Compiled-only throughput of this config: self-play moves/s and learner updates/s (separately)."""
  selfplay = muzero_jax.benchmark_selfplay(config, env, pool, num_envs=(config.num_envs,), repeats=repeats)
  learner = muzero_jax.benchmark_learner(
    config, env, pool, batch_sizes=(config.batch_size,), updates=config.updates_per_iteration, repeats=repeats
  )
  return [dict(bench="cartpole_selfplay", **selfplay[0]), dict(bench="cartpole_learner", **learner[0])]


def solve(
  config: muzero_jax.MuZeroConfig,
  *,
  task: CartPoleTask | None = None,
  max_train_s: float = 1800.0,
  eval_every_s: float = 60.0,
  logdir: str | None = None,
  progress: bool = False,
) -> dict:
  """Trains until the greedy mean return reaches the target or `max_train_s` training seconds pass.

  `task` defaults to `CartPoleTask()`.

  Returns wall time and moves to the target (None if not reached), the best
  mean return, in-training rates (moves/s and updates/s over the training
  clock, evaluation excluded, compilation included) and the evaluation history.
  """
  task = CartPoleTask() if task is None else task
  env, train_pool, eval_pool = make_cartpole(task)
  evaluation = PeriodicEvaluation(
    config,
    env,
    eval_pool,
    every_s=eval_every_s,
    logdir=logdir,
    target=task.target_return,
    seed=config.seed,
    max_train_s=max_train_s,
  )
  first = {}

  def callback(state, metrics):
    first.setdefault("s", metrics.get("speed/first_iteration_s"))
    return evaluation(state, metrics)

  try:
    state = muzero_jax.make_train(config, env, train_pool).init()
    evaluation.evaluate(state)  # the untrained agent (evaluation time is off the clock)
    state = muzero_jax.train(
      config, env, train_pool, logdir=logdir, num_iterations=10**9, callback=callback, state=state, progress=progress
    )
    train_s = evaluation.train_seconds()
    if not evaluation.history or evaluation.history[-1].iteration != int(state.iteration):
      evaluation.evaluate(state)
  finally:
    evaluation.close()
  best = max(evaluation.history, key=lambda r: r.return_mean)
  reached = evaluation.reached
  # Rates after the first iteration (whose time is mostly compilation).
  steady_s = max(train_s - (first["s"] or 0.0), 1e-9)
  steady_moves = int(state.moves) - config.rollout_length * config.num_envs
  return dict(
    bench="cartpole_solve",
    env=task.name,
    target_return=task.target_return,
    seconds_to_target=reached.train_s if reached else None,
    moves_to_target=reached.moves if reached else None,
    updates_to_target=reached.updates if reached else None,
    seconds_to_target_after_first_iteration=reached.train_s - first["s"] if reached else None,
    cpu_seconds_to_target=reached.train_cpu_s if reached else None,
    train_cpu_s=evaluation.train_cpu_seconds(),
    best_return_mean=best.return_mean,
    best_at_s=best.train_s,
    train_s=train_s,
    first_iteration_s=first["s"],
    iterations=int(state.iteration),
    moves=int(state.moves),
    updates=int(state.updates),
    moves_per_s=steady_moves / steady_s,
    updates_per_s=int(state.updates) / steady_s,
    eval_s=sum(r.eval_s for r in evaluation.history),
    load_average=os.getloadavg(),
    history=[
      dict(s=round(r.train_s, 1), cpu_s=round(r.train_cpu_s, 1), moves=r.moves, ret=round(r.return_mean, 1))
      for r in evaluation.history
    ],
  )
