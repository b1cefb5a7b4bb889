"""Train MuZero on gymnax CartPole-v1: `python -m experiments.cartpole` (or `experiments.train --env cartpole`).

Training is `muzero_jax.train`, the same driver as the cube's; the greedy
evaluation every few minutes is its `callback`
(:class:`experiments.control.evaluation.PeriodicEvaluation`). The task, its
presets and the adapter live in :mod:`experiments.control`; flags and resume
are those of the cube entry point (:mod:`experiments.launch`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Literal

import muzero_jax
from experiments.control.cartpole import PRESETS, CartPoleTask, make_cartpole
from experiments.control.evaluation import PeriodicEvaluation
from experiments.launch import (
  Checkpoint,
  UsageError,
  check_training,
  compile_cache,
  iterations_left,
  parse_run_flags,
  peek_flag,
  restore_checkpoint,
  run_command,
)


@dataclasses.dataclass(frozen=True)
class Args:
  """Train MuZero on gymnax CartPole-v1 (needs `pip install -e '.[control]'`); training stops once the greedy
  mean return over 100 episodes reaches 475.

  Resume: `--resume DIR` continues from the newest good checkpoint in DIR with its saved preset, config and
  task, up to `--iterations` in total; flags other than this group's and --checkpoint-every,
  --checkpoints-to-keep must agree with the checkpoint.
  """

  config: muzero_jax.MuZeroConfig = PRESETS["cpu"].config
  """The agent."""
  task: CartPoleTask = CartPoleTask()
  """The environment and its evaluation."""
  preset: Literal["smoke", "cpu", "gpu", "peer"] = "cpu"
  """Size preset; the other flags override it."""
  iterations: int = PRESETS["cpu"].iterations
  """Total training iterations; a resumed run continues up to this total."""
  logdir: str | None = "runs/train"
  """TensorBoard directory (None to disable); `evaluation.json` is written there."""
  checkpoint_dir: str | None = None
  """Orbax checkpoint directory; with --resume the default is the resumed directory."""
  resume: str | None = None
  """Continue training from the newest good checkpoint in this directory."""
  evaluate: bool = True
  """Greedy evaluation of the untrained agent, every few minutes and at the end."""
  eval_only: bool = False
  """Skip training."""


def _fresh(preset: str | None) -> Args:
  name = preset if preset in PRESETS else "cpu"  # tyro rejects an unknown --preset
  return Args(config=PRESETS[name].config, preset=name, iterations=PRESETS[name].iterations)


def _resumed(checkpoint: Checkpoint) -> Args:
  extra = checkpoint.extra
  return Args(
    config=checkpoint.config,
    task=CartPoleTask(**extra["task"]),
    preset=extra["preset"],
    iterations=int(extra["iterations"]),
    checkpoint_dir=checkpoint.directory,
    resume=checkpoint.directory,
  )


def parse(argv: Sequence[str]) -> tuple[Args, Checkpoint | None]:
  """The flags over the preset or the resumed checkpoint."""
  return parse_run_flags(Args, argv, env="cartpole", fresh=_fresh, resumed=_resumed)


def run(args: Args, checkpoint: Checkpoint | None) -> dict:
  """Trains with greedy evaluations of the untrained agent, every few minutes (the preset's `eval_every_s`)
  and at the end; stops early once the target return is reached. Writes `evaluation.json` into the logdir."""
  config, task = args.config, args.task
  try:
    env, train_pool, eval_pool = make_cartpole(task)
  except ImportError as err:
    raise UsageError(str(err)) from err
  print(
    f"{task.name} (gymnax): observation {env.observation_shape}, {env.num_actions} actions; preset "
    f"{args.preset}: {config.num_simulations} simulations, {config.num_envs} environments, batch "
    f"{config.batch_size}, unroll {config.unroll_steps}, n-step {config.n_step}",
    flush=True,
  )
  extra = dict(
    program="experiments.train",
    env="cartpole",
    preset=args.preset,
    iterations=args.iterations,
    task=dataclasses.asdict(task),
  )
  check_training(args, env, train_pool)
  t0 = time.perf_counter()
  state = resumed_at = None
  if checkpoint is not None:
    state = restore_checkpoint(checkpoint, env, train_pool, config).state
    resumed_at = int(state.iteration)
    print(f"resumed {checkpoint.directory} at iteration {resumed_at}")
  path = None if args.logdir is None else os.path.join(args.logdir, "evaluation.json")
  earlier = _earlier(path, resumed_at)
  evaluation = PeriodicEvaluation(
    config,
    env,
    eval_pool,
    every_s=PRESETS[args.preset].eval_every_s,
    logdir=args.logdir,
    target=task.target_return,
    seed=config.seed,
    # A resumed run's clock goes on from its last evaluation's training seconds (an audit: it began at 0 again, so
    # eval/return_vs_seconds ran backwards); the seconds between that evaluation and the checkpoint are not counted.
    start_s=earlier[-1]["train_s"] if earlier else 0.0,
    start_cpu_s=earlier[-1].get("train_cpu_s", 0.0) if earlier else 0.0,
  )
  try:
    if state is None:
      state = muzero_jax.make_train(config, env, train_pool).init()
      if args.evaluate:
        evaluation.evaluate(state)  # the untrained agent: the baseline of the curves
    if not args.eval_only:
      state = muzero_jax.train(
        config,
        env,
        train_pool,
        logdir=args.logdir,
        checkpoint_dir=args.checkpoint_dir,
        num_iterations=iterations_left(args.iterations, state),
        state=state,
        checkpoint_extra=extra,
        callback=evaluation,
      )
    final = None
    if args.evaluate:
      last = evaluation.history[-1] if evaluation.history else None
      final = last if last is not None and last.iteration == int(state.iteration) else evaluation.evaluate(state)
  finally:
    evaluation.close()
  summary = dict(
    env=task.name,
    preset=args.preset,
    iteration=int(state.iteration),
    moves=int(state.moves),
    updates=int(state.updates),
    seconds=time.perf_counter() - t0,
    final_return_mean=final.return_mean if final else None,
    solved_at=dataclasses.asdict(evaluation.reached) if evaluation.reached else None,
  )
  print("summary: " + json.dumps(summary), flush=True)
  if args.logdir:
    os.makedirs(args.logdir, exist_ok=True)
    path = os.path.join(args.logdir, "evaluation.json")
    history = [dataclasses.asdict(r) for r in evaluation.history]
    again = {h["iteration"] for h in history}  # an --eval-only resume evaluates its checkpoint's iteration again
    history = [h for h in earlier if h["iteration"] not in again] + history
    with open(path + ".tmp", "w") as fh:
      json.dump({"summary": summary, "config": config.to_dict(), "history": history}, fh, indent=1)
    os.replace(path + ".tmp", path)
  return summary


def _earlier(path: str | None, resumed_at: int | None) -> list[dict]:
  """A resumed run's evaluations before it: those of `path` (the same logdir's `evaluation.json`) at or before the
  iteration it resumed from (a crashed run's later ones are dropped, as its TensorBoard events are); none for a
  fresh run or a logdir without the file."""
  if resumed_at is None or path is None or not os.path.isfile(path):
    return []
  with open(path) as fh:
    return [h for h in json.load(fh).get("history", []) if int(h["iteration"]) <= resumed_at]


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  return run_command(
    lambda: run(*parse(argv)),
    program="experiments.cartpole",
    checkpoint_dir=peek_flag(argv, "checkpoint_dir") or peek_flag(argv, "resume"),
    logdir=peek_flag(argv, "logdir"),
    paths={name: peek_flag(argv, name) for name in ("checkpoint_dir", "resume", "logdir")},
  )


if __name__ == "__main__":
  compile_cache.enable()
  sys.exit(main())
