"""Train MuZero on a pool of synthetic cubes: `python -m experiments.train`.

Presets (`--preset`): `smoke` (well under a minute on 2 CPU cores), `cpu` (the
default) and `gpu` (:mod:`experiments.launch.cube_presets`). Every field of the
agent's `MuZeroConfig` and of the `CubeTask` is a flag (`--help`); a flag given
overrides the preset. At the end the agent plays greedy episodes on held-out
cubes (generator seeds never used in training) and its findings are scored
against the planted truth, beside a random walk and greedy search at the same
budget and the exhaustive oracle. `--env cartpole` trains on gymnax's CartPole-v1 instead
(:mod:`experiments.cartpole`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np

import cube_env
import muzero_jax
from experiments import cartpole
from experiments.agent import held_out
from experiments.launch import (
  Checkpoint,
  UsageError,
  check_training,
  compile_cache,
  flag,
  iterations_left,
  parse_run_flags,
  peek_flag,
  restore_checkpoint,
  run_command,
)
from experiments.launch.cube_presets import PRESETS

RAY_FLAGS = ("ray_actors", "ray_address", "ray_actor_gpus")


@dataclasses.dataclass(frozen=True)
class Args:
  """Train a MuZero agent that explores healthcare data cubes for disparities.

  Resume: `--resume DIR` continues from the newest good checkpoint in DIR with
  its saved preset, config and cubes, up to `--iterations` in total. Safe to
  change on resume: the flags of this group (--iterations, --logdir,
  --checkpoint-dir, --[no-]evaluate, --eval-only, --ray-*) and
  --checkpoint-every, --checkpoints-to-keep. Any other flag given must agree
  with the checkpoint (otherwise an error names it).
  """

  config: muzero_jax.MuZeroConfig = PRESETS["cpu"].config
  """The agent (its episode length is the task's horizon)."""
  task: cube_env.CubeTask = PRESETS["cpu"].task
  """The training and held-out cubes."""
  env: Literal["cube", "cartpole"] = "cube"
  """Task: synthetic data cubes, or gymnax's CartPole-v1 (`python -m experiments.cartpole`; needs
  `pip install -e '.[control]'`; cube and Ray flags are refused)."""
  preset: Literal["smoke", "cpu", "pretrain", "gpu"] = "cpu"
  """Size preset; the other flags override it."""
  iterations: int = PRESETS["cpu"].iterations
  """Total training iterations (self-play rollout + updates each); a resumed run continues up to this total."""
  logdir: str | None = "runs/train"
  """TensorBoard directory (None to disable); a resumed run continues its curves."""
  checkpoint_dir: str | None = None
  """Orbax checkpoint directory (every --checkpoint-every iterations, at the end and on Ctrl-C); with --resume
  the default is the resumed directory."""
  resume: str | None = None
  """Continue training from the newest good checkpoint in this directory."""
  evaluate: bool = True
  """Evaluate on held-out cubes after training."""
  eval_only: bool = False
  """Skip training (evaluate the initial agent, or the resumed one)."""
  ray_actors: int | None = None
  """Self-play on this many Ray actors (must divide the number of environments); without --ray-address a local
  Ray runtime on 127.0.0.1 is started. Without --ray-actors/--ray-address Ray is not imported."""
  ray_address: str | None = None
  """Join the existing Ray cluster at this address (`ray start --head` on one host; see the README); default 2
  actors."""
  ray_actor_gpus: float = 0.0
  """GPUs per Ray actor (1: a device of its own; 0.5: two actors share one)."""


def _fresh(preset: str | None) -> Args:
  name = preset if preset in PRESETS else "cpu"  # tyro rejects an unknown --preset
  return Args(config=PRESETS[name].config, task=PRESETS[name].task, preset=name, iterations=PRESETS[name].iterations)


def _resumed(checkpoint: Checkpoint) -> Args:
  extra = checkpoint.extra
  saved = extra["task"]
  task = cube_env.CubeTask(
    **{**saved, "scenarios": tuple(saved["scenarios"]), "families": tuple(saved.get("families", ()))}
  )
  return Args(
    config=checkpoint.config,
    task=task,
    preset=extra["preset"],
    iterations=int(extra.get("iterations", 0)),
    checkpoint_dir=checkpoint.directory,
    resume=checkpoint.directory,
  )


def parse(argv: Sequence[str]) -> tuple[Args, Checkpoint | None]:
  """The flags over the preset or the resumed checkpoint; the episode length follows `--horizon`."""
  args, checkpoint = parse_run_flags(Args, argv, env="cube", fresh=_fresh, resumed=_resumed)
  unknown = [f for f in args.task.families if f not in cube_env.worlds.FAMILIES]
  if unknown:  # before the cubes are made
    raise UsageError(
      f"--families: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(cube_env.worlds.FAMILIES)}"
    )
  if checkpoint is None and args.config.max_episode_steps != args.task.horizon:
    if args.config.max_episode_steps != PRESETS[args.preset].config.max_episode_steps:
      raise UsageError(
        f"--max-episode-steps {args.config.max_episode_steps} differs from --horizon {args.task.horizon}: "
        "a cube episode is the query budget (give --horizon only)"
      )
    args = dataclasses.replace(args, config=args.config.replace(max_episode_steps=args.task.horizon))
  return args, checkpoint


def _train_on_ray(args: Args, env, train_pool, state, *, num_iterations: int, extra: dict):
  """Self-play fanned out on Ray actors, learner here (the only place the CLI imports Ray)."""
  config = args.config
  num_actors = args.ray_actors if args.ray_actors is not None else 2
  if num_actors < 1 or config.num_envs % num_actors:
    raise UsageError(
      f"--ray-actors {num_actors} must be >= 1 and divide the {config.num_envs} self-play environments (--num-envs)"
    )
  try:
    from muzero_jax import distributed  # noqa: PLC0415 (Ray is optional: imported only when asked for)
  except ImportError as err:
    raise UsageError(f"--ray-actors/--ray-address need Ray: pip install -e '.[ray]' ({err})") from err
  try:
    distributed.init_ray(args.ray_address)
  except ConnectionError as err:
    raise UsageError(f"--ray-address {args.ray_address}: {err}") from err
  short = distributed.missing_resources(1.0, args.ray_actor_gpus)
  if short and args.ray_address is None:  # this machine's runtime cannot grow: the actors would wait for ever
    raise UsageError(
      f"--ray-actor-gpus {args.ray_actor_gpus:g}: the local Ray runtime cannot place an actor, which asks for "
      f"{', '.join(short)}: give --ray-actor-gpus 0 or join a cluster that has them (--ray-address)"
    )
  where = args.ray_address or "a local Ray runtime on 127.0.0.1"
  print(f"self-play on {num_actors} Ray actors ({config.num_envs // num_actors} environments each) via {where}")
  result = distributed.train_distributed(
    config,
    env,
    train_pool,
    num_actors=num_actors,
    logdir=args.logdir,
    checkpoint_dir=args.checkpoint_dir,
    num_iterations=num_iterations,
    state=state,
    checkpoint_extra=extra,
    actor_gpus=args.ray_actor_gpus,
  )
  print(result.counters.summary())
  return result.state


def run(args: Args, checkpoint: Checkpoint | None) -> dict:
  """Builds the cubes, trains (or resumes) the agent, then evaluates it on the held-out cubes."""
  task, config = args.task, args.config
  extra = dict(
    program="experiments.train",
    env="cube",
    preset=args.preset,
    iterations=args.iterations,
    task=dataclasses.asdict(task),
  )
  t0 = time.perf_counter()
  train_set = cube_env.make_cubes(task, split="train")
  eval_set = cube_env.make_cubes(task, split="eval")
  env, (train_pool, eval_pool) = cube_env.make_pool(task, [train_set, eval_set])
  print(
    f"cubes: {len(train_set.cubes)} training (seeds {train_set.seeds[0]}..), {len(eval_set.cubes)} held-out "
    f"(seeds {eval_set.seeds[0]}..); grid {env.observation_shape}, {env.num_actions} actions; "
    f"{time.perf_counter() - t0:.1f} s"
  )
  check_training(args, env, train_pool)
  state = None
  if checkpoint is not None:
    restored = restore_checkpoint(checkpoint, env, train_pool, config)
    state = restored.state
    print(
      f"resumed {checkpoint.directory} at step {restored.step}: "
      + ", ".join(f"{k} {v}" for k, v in restored.meta["counters"].items())
    )
  if args.eval_only:
    state = state if state is not None else muzero_jax.make_train(config, env, train_pool).init()
  else:
    remaining = iterations_left(args.iterations, state)
    if args.ray_actors is not None or args.ray_address is not None:
      state = _train_on_ray(args, env, train_pool, state, num_iterations=remaining, extra=extra)
    else:
      state = muzero_jax.train(
        config,
        env,
        train_pool,
        logdir=args.logdir,
        checkpoint_dir=args.checkpoint_dir,
        num_iterations=remaining,
        state=state,
        checkpoint_extra=extra,
      )
  if not args.evaluate:
    return dict(iteration=int(state.iteration), seconds=time.perf_counter() - t0)
  rows = held_out.evaluate_held_out(task, env, state.params, config, eval_set, eval_pool, seed=config.seed)
  return _report(rows, task, args.logdir, seconds=time.perf_counter() - t0)


def _report(rows: list[dict], task, logdir: str | None, *, seconds: float) -> dict:
  """Prints the held-out rows and their means; writes `evaluation.json` into `logdir`."""
  print(f"held-out evaluation (budget {task.horizon} queries per cube):")
  for r in rows:
    print(
      f"  {r['scenario']:>12} seed {r['seed']}: agent return {r['agent_return']:.0f} "
      f"(recall {r['agent_recall']:.2f}), random walk {r['random_return']:.0f} "
      f"(recall {r['random_recall']:.2f}), greedy search {r['greedy_return']:.0f} "
      f"(recall {r['greedy_recall']:.2f}), oracle recall {r['oracle_recall']:.2f} "
      f"with {r['oracle_queries']} queries"
    )
  names = (
    "agent_return",
    "random_return",
    "greedy_return",
    "agent_recall",
    "random_recall",
    "greedy_recall",
    "oracle_recall",
  )
  summary = {k: float(np.nanmean([r[k] for r in rows])) for k in names}
  summary["seconds"] = seconds
  print("mean: " + json.dumps(summary))
  if logdir:
    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, "evaluation.json"), "w") as fh:
      json.dump({"summary": summary, "rows": rows}, fh, indent=1)
  return summary


def _cartpole(argv: list[str]) -> int:
  """`--env cartpole`: the CartPole entry point, after refusing the cube's and Ray's flags."""
  cube_only = [f.name for f in dataclasses.fields(cube_env.CubeTask)] + list(RAY_FLAGS)
  given = [n for n in cube_only if any(a == flag(n) or a.startswith(flag(n) + "=") for a in argv)]
  if given:
    print(f"error: --env cartpole does not take {', '.join(flag(n) for n in given)}", file=sys.stderr)
    return 2
  rest, skip = [], False
  for a in argv:  # drop `--env cartpole` / `--env=cartpole`
    if not skip and a != "--env" and not a.startswith("--env="):
      rest.append(a)
    skip = a == "--env"
  return cartpole.main(rest)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if peek_flag(argv, "env") == "cartpole":
    return _cartpole(argv)
  return run_command(
    lambda: run(*parse(argv)),
    program="experiments.train",
    checkpoint_dir=peek_flag(argv, "checkpoint_dir") or peek_flag(argv, "resume"),
    logdir=peek_flag(argv, "logdir"),
    paths={name: peek_flag(argv, name) for name in ("checkpoint_dir", "resume", "logdir")},
  )


if __name__ == "__main__":
  compile_cache.enable()
  sys.exit(main())
