"""CartPole-v1 (gymnax) for `muzero_jax`: presets, periodic greedy evaluation, the training run.

`python -m experiments.train --env cartpole` lands in :func:`run`; `python -m
experiments.benchmark cartpole` in :func:`solve`. Training is `muzero_jax.train`,
the same loop as the cube's; the evaluation every few minutes is its `callback`
(:class:`PeriodicEvaluation`), not a fork of the loop.

Choices for this task (see also `experiments/gymnax_env.py`):

* the observation carries the fraction of the 500-step limit used, so that
  `muzero_jax`'s "episode end = terminal" value targets are exact at the time
  limit (Pardo et al. 2018);
* discount 0.99 (horizon ~100 steps, ample to balance a pole), so discounted
  returns stay below 100 and fit a value support of [-10, 10] after MuZero's
  transform h; rewards are 1 (a reward support of [-1, 1]);
* a small MLP (4+1 inputs, 2 actions) and Gumbel MuZero with both actions
  considered and few simulations (Danihelka et al. 2022: policy improvement
  holds with few simulations); many environments stepped together (Anakin).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np

import muzero_jax
from experiments import gymnax_env

TARGET_RETURN = 475.0
"""CartPole-v1's "solved" threshold (Gym's `reward_threshold`): mean return over 100 episodes."""

_COMMON = dict(
  network="mlp",
  support_size=10,
  reward_support_size=1,
  max_reward=1.0,
  max_episode_steps=500,
  discount=0.99,
  search="gumbel",
  max_num_considered_actions=2,
  reanalyse_fraction=0.0,
  value_loss_weight=0.25,
  learning_rate=3e-3,
  warmup_steps=100,
  decay_steps=20000,
)

PRESETS: dict[str, dict[str, Any]] = {
  # Tests: the smallest useful config; ~10 s of training (250 iterations) lifts the greedy mean return
  # from 9 to about 100 (compilation takes longer than that on 2 cores).
  "smoke": dict(
    config=dict(
      _COMMON,
      hidden_size=32,
      latent_size=16,
      mlp_layers=1,
      num_simulations=4,
      num_envs=16,
      rollout_length=16,
      replay_capacity=16 * 256,
      min_replay_size=256,
      n_step=5,
      unroll_steps=3,
      batch_size=64,
      updates_per_iteration=4,
    ),
    iterations=250,
    eval_every_s=60.0,
  ),
  # This machine (2 CPU cores): solves CartPole (greedy mean >= 475 over 100 episodes) in 1-3 minutes
  # (benchmarks/cartpole_cpu.jsonl); 1 sampled position per self-play move.
  "cpu": dict(
    config=dict(
      _COMMON,
      hidden_size=64,
      latent_size=32,
      mlp_layers=2,
      num_simulations=8,
      num_envs=32,
      rollout_length=16,
      replay_capacity=32 * 1000,
      min_replay_size=1000,
      n_step=10,
      unroll_steps=5,
      batch_size=128,
      updates_per_iteration=4,
    ),
    iterations=6000,
    eval_every_s=60.0,
  ),
  # An accelerator: more environments and a larger batch per iteration (not measured here: no GPU).
  "gpu": dict(
    config=dict(
      _COMMON,
      hidden_size=128,
      latent_size=64,
      mlp_layers=2,
      num_simulations=16,
      num_envs=256,
      rollout_length=16,
      replay_capacity=256 * 500,
      min_replay_size=4096,
      n_step=10,
      unroll_steps=5,
      batch_size=512,
      updates_per_iteration=8,
    ),
    iterations=3000,
    eval_every_s=120.0,
  ),
  # The peer's settings where muzero_jax has them (werner-duvaud/muzero-general games/cartpole.py):
  # PUCT with 50 simulations, discount 0.997, batch 128, unroll 10, td 50, one game at a time,
  # encoding 8 and hidden layers of 16, value loss weight 1, Adam at 0.02, 1.5 training steps per
  # move (its `ratio`). For speed comparisons.
  "peer": dict(
    config=dict(
      _COMMON,
      search="muzero",
      num_simulations=50,
      discount=0.997,
      support_size=16,
      hidden_size=16,
      latent_size=8,
      mlp_layers=1,
      num_envs=1,
      rollout_length=50,
      replay_capacity=50_000,
      min_replay_size=500,
      n_step=50,
      unroll_steps=10,
      batch_size=128,
      updates_per_iteration=75,
      value_loss_weight=1.0,
      learning_rate=0.02,
      weight_decay=0.0,
      dirichlet_alpha=0.25,
    ),
    iterations=2000,
    eval_every_s=120.0,
  ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CartPoleTask:
  """The environment and how it is evaluated (stored in checkpoints to rebuild it on resume)."""

  name: str = "CartPole-v1"
  time_feature: bool = True
  eval_episodes: int = 100
  target_return: float = TARGET_RETURN


def make_env(task: CartPoleTask):
  """`(env, train_pool, eval_pool)`: the adapter, a one-entry training pool, `eval_episodes` copies."""
  env = gymnax_env.GymnaxEnv(task.name, time_feature=task.time_feature)
  return env, gymnax_env.params_pool(task.name, 1), gymnax_env.params_pool(task.name, task.eval_episodes)


def make_config(preset: str = "cpu", **overrides) -> muzero_jax.MuZeroConfig:
  """The preset's config with `overrides` (unknown names raise `ValueError`)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown cartpole preset {preset!r}; choose one of {sorted(PRESETS)}")
  return muzero_jax.MuZeroConfig.from_dict({**PRESETS[preset]["config"], **overrides})


@dataclasses.dataclass
class EvalRecord:
  """One greedy evaluation (`episodes` episodes, one per evaluation-pool entry)."""

  iteration: int
  updates: int
  moves: int
  train_s: float  # wall seconds since training started, evaluation time excluded (compilation included)
  train_cpu_s: float  # CPU seconds of this process over the same span (all threads; evaluation excluded)
  return_mean: float
  return_std: float
  return_min: float
  return_max: float
  episodes: int
  eval_s: float


class PeriodicEvaluation:
  """`callback(state, metrics)` for `muzero_jax.train`: greedy evaluation every `every_s` seconds.

  The clock starts when the object is made (build it just before training, so
  compilation counts) and pauses while evaluating. Each evaluation writes
  TensorBoard scalars: `eval/return_mean` (and min, std) at the training
  iteration, `eval/return_vs_moves` at step = self-play moves and
  `eval/return_vs_seconds` at step = training seconds. Returns True (stop
  training) once the mean reaches `target` when `stop_at_target`.
  """

  def __init__(
    self,
    config,
    env,
    eval_pool,
    *,
    every_s: float,
    logdir: str | None = None,
    target: float = TARGET_RETURN,
    stop_at_target: bool = True,
    seed: int = 0,
    max_train_s: float | None = None,
    verbose: bool = True,
  ) -> None:
    self.config, self.env, self.eval_pool = config, env, eval_pool
    self.every_s, self.target, self.stop_at_target = every_s, target, stop_at_target
    self.max_train_s, self.verbose, self.seed = max_train_s, verbose, seed
    self.history: list[EvalRecord] = []
    self.reached: EvalRecord | None = None
    self._start = time.perf_counter()
    self._start_cpu = time.process_time()
    self._paused = 0.0
    self._paused_cpu = 0.0
    self._last_eval = 0.0
    self._writer = None
    if logdir is not None:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._writer = SummaryWriter(logdir, filename_suffix=".eval")

  def train_seconds(self) -> float:
    """Wall seconds of training so far (evaluation excluded)."""
    return time.perf_counter() - self._start - self._paused

  def train_cpu_seconds(self) -> float:
    """CPU seconds this process spent training so far (evaluation excluded); on a shared machine this is
    what the run would need of the cores it had to itself."""
    return time.process_time() - self._start_cpu - self._paused_cpu

  def evaluate(self, state) -> EvalRecord:
    """Greedy episodes on every entry of the evaluation pool now; logged and kept in `history`."""
    train_s, train_cpu_s = self.train_seconds(), self.train_cpu_seconds()
    t0, c0 = time.perf_counter(), time.process_time()
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), int(state.iteration))
    result = muzero_jax.evaluate(state.params, self.config, self.env, self.eval_pool, key)
    returns = np.asarray(result.returns, np.float64)
    eval_s = time.perf_counter() - t0
    self._paused += eval_s
    self._paused_cpu += time.process_time() - c0
    rec = EvalRecord(
      iteration=int(state.iteration),
      updates=int(state.updates),
      moves=int(state.moves),
      train_s=train_s,
      train_cpu_s=train_cpu_s,
      return_mean=float(returns.mean()),
      return_std=float(returns.std()),
      return_min=float(returns.min()),
      return_max=float(returns.max()),
      episodes=len(returns),
      eval_s=eval_s,
    )
    self.history.append(rec)
    if self.reached is None and rec.return_mean >= self.target:
      self.reached = rec
    if self._writer is not None:
      w = self._writer
      for name in ("return_mean", "return_min", "return_std"):
        w.add_scalar(f"eval/{name}", getattr(rec, name), rec.iteration)
      w.add_scalar("eval/return_vs_moves", rec.return_mean, rec.moves)
      w.add_scalar("eval/return_vs_seconds", rec.return_mean, int(round(rec.train_s)))
      w.flush()
    if self.verbose:
      print(
        f"eval: iteration {rec.iteration}, {rec.moves} moves, {rec.train_s:.0f} s ({rec.train_cpu_s:.0f} CPU s): "
        f"mean return {rec.return_mean:.1f} (min {rec.return_min:.0f}, {rec.episodes} greedy episodes, "
        f"{eval_s:.1f} s)",
        flush=True,
      )
    return rec

  def __call__(self, state, metrics) -> bool:
    del metrics
    now = self.train_seconds()
    if now - self._last_eval >= self.every_s:
      self._last_eval = now
      self.evaluate(state)
      if self.stop_at_target and self.reached is not None:
        return True
    return self.max_train_s is not None and self.train_seconds() >= self.max_train_s

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


# ------------------------------------------------------------------ experiments.train --env cartpole
CONFIG_FLAGS = ("num_simulations", "search", "network", "num_envs", "batch_size", "learning_rate")


def _config_from_args(args, preset: str) -> muzero_jax.MuZeroConfig:
  overrides = {n: getattr(args, n) for n in CONFIG_FLAGS if getattr(args, n, None) is not None}
  if getattr(args, "checkpoint_every", None) is not None:
    overrides["checkpoint_every"] = args.checkpoint_every
  if getattr(args, "keep", None) is not None:
    overrides["checkpoints_to_keep"] = args.keep
  return make_config(preset, seed=args.seed or 0, **overrides)


def _resumed(args):
  """Config, preset, iterations and task saved in the checkpoint `args.resume` (flags checked against them)."""
  from experiments.train import UsageError, read_checkpoint_meta  # noqa: PLC0415 (train imports this module lazily)

  directory = args.resume
  config, meta = read_checkpoint_meta(directory)
  extra = meta.get("extra") or {}
  if extra.get("env") != "cartpole":
    raise UsageError(
      f"--resume {directory}: checkpoint was written by --env {extra.get('env', 'cube')}, not --env cartpole"
    )
  conflicts = []
  if args.preset is not None and args.preset != extra["preset"]:
    conflicts.append(f"--preset {args.preset} (checkpoint: {extra['preset']})")
  for name in CONFIG_FLAGS + ("seed",):
    given = getattr(args, name, None)
    if given is not None and given != getattr(config, name):
      conflicts.append(f"--{name.replace('_', '-')} {given} (checkpoint: {getattr(config, name)})")
  if conflicts:
    raise UsageError(f"--resume {directory}: flag(s) contradict the checkpoint: {'; '.join(conflicts)}")
  changes = {}
  if args.checkpoint_every is not None:
    changes["checkpoint_every"] = args.checkpoint_every
  if args.keep is not None:
    changes["checkpoints_to_keep"] = args.keep
  config = config.replace(**changes) if changes else config
  iterations = args.iterations if args.iterations is not None else int(extra["iterations"])
  return config, extra, iterations, CartPoleTask(**extra["task"])


def run(args) -> dict:
  """`experiments.train --env cartpole`: train with the preset; greedy evaluation of the untrained agent,
  then every few minutes (the preset's `eval_every_s`) and at the end.

  Training stops early once the greedy mean return reaches 475 (CartPole-v1 solved).
  Writes `evaluation.json` (every evaluation) next to the TensorBoard events.
  """
  from experiments.train import TASK_FLAGS, UsageError, _holds_checkpoints  # noqa: PLC0415

  cube_only = [n for n in TASK_FLAGS + ("ray_actors", "ray_address") if getattr(args, n, None) is not None]
  if cube_only:
    raise UsageError(f"--env cartpole does not take {', '.join('--' + n.replace('_', '-') for n in cube_only)}")
  if args.resume is not None:
    config, extra, iterations, task = _resumed(args)
    checkpoint_dir = args.checkpoint_dir or args.resume
  else:
    preset = args.preset or "cpu"
    task = CartPoleTask()
    config = _config_from_args(args, preset)
    iterations = args.iterations if args.iterations is not None else PRESETS[preset]["iterations"]
    extra = dict(
      program="experiments.train", env="cartpole", preset=preset, iterations=iterations, task=dataclasses.asdict(task)
    )
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir and _holds_checkpoints(checkpoint_dir):
      raise UsageError(
        f"--checkpoint-dir {checkpoint_dir} already holds checkpoints; continue them with --resume "
        f"{checkpoint_dir} or choose an empty directory"
      )
  try:
    env, train_pool, eval_pool = make_env(task)
  except ImportError as err:
    raise UsageError(str(err)) from err
  print(
    f"{task.name} (gymnax): observation {env.observation_shape}, {env.num_actions} actions; preset "
    f"{extra['preset']}: {config.num_simulations} simulations, {config.num_envs} environments, batch "
    f"{config.batch_size}, unroll {config.unroll_steps}, n-step {config.n_step}",
    flush=True,
  )
  t0 = time.perf_counter()
  state = None
  if args.resume is not None:
    state = muzero_jax.restore(args.resume, env, train_pool, config=config, quarantine=True).state
    print(f"resumed {args.resume} at iteration {int(state.iteration)}")
  evaluation = PeriodicEvaluation(
    config,
    env,
    eval_pool,
    every_s=PRESETS[extra["preset"]]["eval_every_s"],
    logdir=args.logdir,
    target=task.target_return,
    seed=config.seed,
  )
  try:
    if state is None:
      state = muzero_jax.make_train(config, env, train_pool).init()
      if args.evaluate:
        evaluation.evaluate(state)  # the untrained agent: the baseline of the curves
    if not args.eval_only:
      done = int(state.iteration)
      state = muzero_jax.train(
        config,
        env,
        train_pool,
        logdir=args.logdir,
        checkpoint_dir=checkpoint_dir,
        num_iterations=max(iterations - done, 0),
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
    preset=extra["preset"],
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
    with open(os.path.join(args.logdir, "evaluation.json"), "w") as fh:
      json.dump(
        {
          "summary": summary,
          "config": config.to_dict(),
          "history": [dataclasses.asdict(r) for r in evaluation.history],
        },
        fh,
        indent=1,
      )
  return summary


# ------------------------------------------------------------------ experiments.benchmark cartpole
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
  task: CartPoleTask = CartPoleTask(),
  max_train_s: float = 1800.0,
  eval_every_s: float = 60.0,
  logdir: str | None = None,
  progress: bool = False,
) -> dict:
  """Trains until the greedy mean return reaches the target or `max_train_s` training seconds pass.

  Returns wall time and moves to the target (None if not reached), the best
  mean return, in-training rates (moves/s and updates/s over the training
  clock, evaluation excluded, compilation included) and the evaluation history.
  """
  env, train_pool, eval_pool = make_env(task)
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


def main() -> int:  # pragma: no cover - convenience: python -m experiments.cartpole == experiments.train --env cartpole
  from experiments import train  # noqa: PLC0415

  return train.main(["--env", "cartpole", *sys.argv[1:]])


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
