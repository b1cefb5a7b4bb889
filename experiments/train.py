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

PRESETS = {
  "smoke": dict(
    task=dict(num_train_cubes=2, num_eval_cubes=2, n_rows=2500, horizon=8, max_depth=2),
    config=dict(
      channels=8,
      num_blocks=1,
      head_channels=4,
      latent_size=16,
      hidden_size=16,
      num_simulations=4,
      max_num_considered_actions=4,
      num_envs=4,
      rollout_length=8,
      replay_capacity=512,
      min_replay_size=32,
      batch_size=16,
      unroll_steps=3,
      n_step=3,
      updates_per_iteration=2,
      warmup_steps=5,
      decay_steps=200,
    ),
    iterations=3,
  ),
  "cpu": dict(
    task=dict(num_train_cubes=8, num_eval_cubes=4, n_rows=4000, horizon=16, max_depth=3),
    config=dict(
      channels=16,
      num_blocks=1,
      head_channels=8,
      latent_size=32,
      hidden_size=32,
      num_simulations=8,
      max_num_considered_actions=8,
      num_envs=8,
      rollout_length=8,
      replay_capacity=8192,
      min_replay_size=128,
      batch_size=32,
      updates_per_iteration=4,
      warmup_steps=20,
      decay_steps=5000,
    ),
    iterations=400,
  ),
  "gpu": dict(
    task=dict(num_train_cubes=64, num_eval_cubes=16, n_rows=20000, horizon=64, max_depth=3),
    config=dict(
      channels=64,
      num_blocks=4,
      num_simulations=32,
      num_envs=256,
      rollout_length=32,
      support_size=30,
      replay_capacity=262144,
      batch_size=512,
      updates_per_iteration=16,
      decay_steps=200000,
    ),
    iterations=2000,
  ),
}


CONFIG_FLAGS = ("num_simulations", "search", "network", "num_envs", "batch_size", "learning_rate")
TASK_FLAGS = ("num_train_cubes", "num_eval_cubes", "n_rows", "horizon")
SAFE_ON_RESUME = (
  "iterations",
  "logdir",
  "checkpoint_dir",
  "checkpoint_every",
  "keep",
  "evaluate",
  "eval_only",
  "ray_actors",
  "ray_address",
  "ray_actor_gpus",
)


class UsageError(ValueError):
  """A flag or path the user gave is wrong (printed as `error: ...`, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Args:
  """Train a MuZero agent that explores healthcare data cubes for disparities.

  Resume: `--resume DIR` continues from the newest good checkpoint in DIR with
  its saved preset, config and cubes, up to `--iterations` in total. Safe to
  change on resume: --iterations, --logdir, --checkpoint-dir, --checkpoint-every,
  --keep, --[no-]evaluate, --eval-only. Any other flag given must agree with the
  checkpoint (otherwise an error names it).
  """

  env: Literal["cube", "cartpole"] = "cube"
  """Task: synthetic data cubes, or gymnax's CartPole-v1 (needs `pip install -e '.[control]'`; cube and Ray
  flags are refused; training stops once the greedy mean return over 100 episodes reaches 475)."""
  preset: Literal["smoke", "cpu", "gpu"] | None = None
  """Size preset (default cpu); the flags below override it."""
  iterations: int | None = None
  """Total training iterations (self-play rollout + updates each); a resumed run continues up to this total."""
  seed: int | None = None
  """Seed of the agent (default 0; cubes come from fixed generator seeds)."""
  logdir: str | None = "runs/train"
  """TensorBoard directory (None to disable); a resumed run continues its curves."""
  checkpoint_dir: str | None = None
  """Orbax checkpoint directory (every --checkpoint-every iterations, at the end and on Ctrl-C); with --resume
  the default is the resumed directory."""
  resume: str | None = None
  """Continue training from the newest good checkpoint in this directory."""
  checkpoint_every: int | None = None
  """Iterations between checkpoints (default: the config's checkpoint_every)."""
  keep: int | None = None
  """Checkpoints kept (the newest; default: the config's checkpoints_to_keep)."""
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


def build(args: Args):
  """Task, config and total iterations of a fresh run."""
  preset_name = args.preset or "cpu"
  preset = PRESETS[preset_name]
  task_kw = dict(preset["task"])
  for name in TASK_FLAGS:
    if getattr(args, name) is not None:
      task_kw[name] = getattr(args, name)
  task = cube_env.CubeTask(**task_kw)
  cfg_kw = dict(preset["config"])
  for name in CONFIG_FLAGS:
    if getattr(args, name) is not None:
      cfg_kw[name] = getattr(args, name)
  if args.checkpoint_every is not None:
    cfg_kw["checkpoint_every"] = args.checkpoint_every
  if args.keep is not None:
    cfg_kw["checkpoints_to_keep"] = args.keep
  config = muzero_jax.MuZeroConfig(seed=args.seed or 0, max_episode_steps=task.horizon, **cfg_kw)
  iterations = args.iterations if args.iterations is not None else preset["iterations"]
  return task, config, iterations


def read_checkpoint_meta(directory: str):
  """Config and meta of the newest readable checkpoint in `--resume` `directory` (its arrays are checked later)."""
  if not os.path.isdir(directory):
    raise UsageError(f"--resume {directory}: no such directory")
  ckpt = muzero_jax.Checkpointer(directory, create=False)
  try:
    if not ckpt.all_steps():
      raise UsageError(
        f"--resume {directory}: the directory holds no checkpoint (no step directory written by --checkpoint-dir)"
      )
    _, config, meta = ckpt.newest_readable_meta()
  except FileNotFoundError as err:
    raise UsageError(f"--resume {directory}: {err}") from err
  finally:
    ckpt.close()
  return config, meta


def build_resumed(args: Args):
  """Task, config and total iterations saved in the checkpoint `args.resume`, checked against the flags."""
  directory = args.resume
  config, meta = read_checkpoint_meta(directory)
  extra = meta.get("extra") or {}
  if extra.get("env", "cube") != args.env:
    raise UsageError(
      f"--resume {directory}: checkpoint was written with --env {extra.get('env', 'cube')}, not --env {args.env}"
    )
  if "task" not in extra or "preset" not in extra:
    raise UsageError(f"--resume {directory}: checkpoint was not written by experiments.train (its meta has no task)")
  task_kw = dict(extra["task"])
  task_kw["scenarios"] = tuple(task_kw["scenarios"])
  task = cube_env.CubeTask(**task_kw)
  conflicts = []
  if args.preset is not None and args.preset != extra["preset"]:
    conflicts.append(f"--preset {args.preset} (checkpoint: {extra['preset']})")
  if args.seed is not None and args.seed != config.seed:
    conflicts.append(f"--seed {args.seed} (checkpoint: {config.seed})")
  for name, saved in [(n, getattr(config, n)) for n in CONFIG_FLAGS] + [(n, getattr(task, n)) for n in TASK_FLAGS]:
    given = getattr(args, name)
    if given is not None and given != saved:
      conflicts.append(f"--{name.replace('_', '-')} {given} (checkpoint: {saved})")
  if conflicts:
    raise UsageError(
      f"--resume {directory}: flag(s) contradict the checkpoint: {'; '.join(conflicts)}. Safe to change "
      f"on resume: {', '.join('--' + n.replace('_', '-') for n in SAFE_ON_RESUME)}"
    )
  changes = {}
  if args.checkpoint_every is not None:
    changes["checkpoint_every"] = args.checkpoint_every
  if args.keep is not None:
    changes["checkpoints_to_keep"] = args.keep
  config = config.replace(**changes) if changes else config
  iterations = args.iterations if args.iterations is not None else int(extra.get("iterations", 0))
  return task, config, iterations, extra


def evaluate(task, config, env, params, eval_set, eval_pool, *, seed: int = 0) -> list[dict]:
  """Greedy agent vs random walk on held-out cubes; findings scored against truth."""
  key = jax.random.PRNGKey(seed)
  agent = muzero_jax.evaluate(params, config, env, eval_pool, key)
  rnd_ret, rnd_actions = cube_env.random_rollouts(env, eval_pool, key, num_steps=task.horizon)
  rows = []
  agent_actions = np.asarray(agent.actions)
  for i, cube in enumerate(eval_set.cubes):
    one = jax.tree.map(lambda x, i=i: x[i], eval_pool)
    oracle = cube_env.cube_oracle(one, cube)
    truth = eval_set.truths[i]
    a = cube_env.score_episode(env, one, cube, truth, agent_actions[i], oracle)
    r = cube_env.score_episode(env, one, cube, truth, np.asarray(rnd_actions)[i], oracle)
    oracle_recall = cube_env.score_findings(oracle, truth, cube=cube)["recall"]
    rows.append(
      dict(
        scenario=eval_set.scenarios[i],
        seed=eval_set.seeds[i],
        agent_return=float(agent.returns[i]),
        random_return=float(rnd_ret[i]),
        agent_recall=a["recall"],
        random_recall=r["recall"],
        oracle_recall=oracle_recall,
        oracle_findings=len(oracle),
        oracle_queries=oracle.attrs["queries"],
        budget=task.horizon,
      )
    )
  return rows


def _train_on_ray(args: Args, config, env, train_pool, state, *, num_iterations: int, checkpoint_dir, extra):
  """Self-play fanned out on Ray actors, learner here (the only place the CLI imports Ray)."""
  num_actors = args.ray_actors if args.ray_actors is not None else 2
  if num_actors < 1 or config.num_envs % num_actors:
    raise UsageError(
      f"--ray-actors {num_actors} must be >= 1 and divide the {config.num_envs} self-play environments (--num-envs)"
    )
  try:
    from muzero_jax import distributed
  except ImportError as err:
    raise UsageError(f"--ray-actors/--ray-address need Ray: pip install -e '.[ray]' ({err})") from err
  distributed.init_ray(args.ray_address)
  where = args.ray_address or "a local Ray runtime on 127.0.0.1"
  print(f"self-play on {num_actors} Ray actors ({config.num_envs // num_actors} environments each) via {where}")
  result = distributed.train(
    config,
    env,
    train_pool,
    num_actors=num_actors,
    logdir=args.logdir,
    checkpoint_dir=checkpoint_dir,
    num_iterations=num_iterations,
    state=state,
    checkpoint_extra=extra,
    actor_gpus=args.ray_actor_gpus,
  )
  print(result.counters.summary())
  return result.state


def _holds_checkpoints(directory: str) -> bool:
  if not os.path.isdir(directory):
    return False
  ckpt = muzero_jax.Checkpointer(directory, create=False)
  try:
    return bool(ckpt.all_steps())
  finally:
    ckpt.close()


def run(args: Args) -> dict:
  if args.env == "cartpole":
    from experiments import cartpole  # gymnax is optional: imported only for this task

    return cartpole.run(args)
  if args.resume is not None:
    task, config, iterations, extra = build_resumed(args)
    checkpoint_dir = args.checkpoint_dir or args.resume
  else:
    task, config, iterations = build(args)
    extra = dict(
      program="experiments.train",
      env="cube",
      preset=args.preset or "cpu",
      iterations=iterations,
      task=dataclasses.asdict(task),
    )
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir and _holds_checkpoints(checkpoint_dir):
      raise UsageError(
        f"--checkpoint-dir {checkpoint_dir} already holds checkpoints; continue them with --resume "
        f"{checkpoint_dir} or choose an empty directory"
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
  state = None
  if args.resume is not None:
    try:
      restored = muzero_jax.restore(args.resume, env, train_pool, config=config, quarantine=True)
    except ValueError as err:  # made for another environment or config
      raise UsageError(f"--resume {args.resume}: {err}") from err
    state = restored.state
    print(
      f"resumed {args.resume} at step {restored.step}: "
      + ", ".join(f"{k} {v}" for k, v in restored.meta["counters"].items())
    )
  if args.eval_only:
    state = state if state is not None else muzero_jax.make_train(config, env, train_pool).init()
  else:
    done = int(state.iteration) if state is not None else 0
    if args.ray_actors is not None or args.ray_address is not None:
      state = _train_on_ray(
        args,
        config,
        env,
        train_pool,
        state,
        num_iterations=max(iterations - done, 0),
        checkpoint_dir=checkpoint_dir,
        extra=extra,
      )
    else:
      state = muzero_jax.train(
        config,
        env,
        train_pool,
        logdir=args.logdir,
        checkpoint_dir=checkpoint_dir,
        num_iterations=max(iterations - done, 0),
        state=state,
        checkpoint_extra=extra,
      )
  if not args.evaluate:
    return dict(iteration=int(state.iteration), seconds=time.perf_counter() - t0)
  rows = evaluate(task, config, env, state.params, eval_set, eval_pool, seed=config.seed)
  mean = lambda k: float(np.nanmean([r[k] for r in rows]))
  print("held-out evaluation (budget %d queries per cube):" % task.horizon)
  for r in rows:
    print(
      f"  {r['scenario']:>12} seed {r['seed']}: agent return {r['agent_return']:.0f} "
      f"(recall {r['agent_recall']:.2f}), random walk {r['random_return']:.0f} "
      f"(recall {r['random_recall']:.2f}), oracle recall {r['oracle_recall']:.2f} "
      f"with {r['oracle_queries']} queries"
    )
  summary = dict(
    agent_return=mean("agent_return"),
    random_return=mean("random_return"),
    agent_recall=mean("agent_recall"),
    random_recall=mean("random_recall"),
    oracle_recall=mean("oracle_recall"),
    seconds=time.perf_counter() - t0,
  )
  print("mean: " + json.dumps(summary))
  if args.logdir:
    os.makedirs(args.logdir, exist_ok=True)
    with open(os.path.join(args.logdir, "evaluation.json"), "w") as fh:
      json.dump({"summary": summary, "rows": rows}, fh, indent=1)
  return summary


def main(argv: list[str] | None = None) -> int:
  args = tyro.cli(Args, args=argv)
  try:
    run(args)
  except (UsageError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as err:
    print(f"\ninterrupted: {err or 'no checkpoint directory given, nothing saved'}", file=sys.stderr)
    if args.checkpoint_dir or args.resume:
      print(
        f"continue with: python -m experiments.train --resume {args.checkpoint_dir or args.resume}", file=sys.stderr
      )
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
