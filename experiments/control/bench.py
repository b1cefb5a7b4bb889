"""`python -m experiments.benchmark cartpole`: MuZero on gymnax CartPole-v1.

Prints JSON lines: for each of `--speed-presets`, the compiled self-play moves/s
(`bench=cartpole_selfplay`) and learner updates/s (`bench=cartpole_learner`),
each measured alone; then for each seed one training run of `--preset` until
the greedy mean return over 100 episodes reaches 475 (`bench=cartpole_solve`:
wall seconds, moves and updates to the target, best return, in-training rates,
the evaluation history). Every line carries the config used.
"""

from __future__ import annotations

import dataclasses

import jax

from experiments.control import cartpole, solve


@dataclasses.dataclass(frozen=True)
class CartPole:
  """MuZero on gymnax CartPole-v1: compiled self-play moves/s and learner steps/s per preset, then
  training until the greedy mean return over 100 episodes reaches 475 (wall time, moves, updates)."""

  preset: str = "cpu"
  """experiments.control.cartpole preset trained to the target."""
  seeds: tuple[int, ...] = (0,)
  """One training run per seed."""
  max_minutes: float = 30.0
  """Training budget per run (minutes of training, evaluation excluded); the best return is reported if the
  target is not reached."""
  eval_every_s: float = 30.0
  """Seconds of training between greedy evaluations (100 episodes each)."""
  speed_presets: tuple[str, ...] = ("cpu", "peer")
  """Presets whose compiled throughput is measured alone (peer: muzero-general's search and learner sizes)."""
  solve: bool = True
  """Train to the target (False: speed only)."""
  out: str | None = None
  """Append the JSON lines to this file too."""


def check(args: CartPole) -> None:
  """ValueError naming the flag of an unknown preset or a budget not above 0, before anything is measured (an
  unknown --preset was found only after every speed preset had been measured)."""
  for flag, names in (("--preset", (args.preset,)), ("--speed-presets", args.speed_presets)):
    unknown = [name for name in names if name not in cartpole.PRESETS]
    if unknown:
      raise ValueError(f"unknown {flag} {', '.join(map(repr, unknown))}; choose from {', '.join(cartpole.PRESETS)}")
  if not min(args.max_minutes, args.eval_every_s) > 0:
    raise ValueError(f"--max-minutes and --eval-every-s must be above 0, got {args.max_minutes}, {args.eval_every_s}")


def run(args: CartPole, emit) -> list[dict]:
  """Runs the benchmark on flags already `check`ed (`experiments.benchmark` does, turning its error into a usage
  error); `emit(rows, out)` prints (and appends) JSON lines and returns the rows."""
  device = jax.devices()[0]
  tag = dict(env="CartPole-v1", device=device.device_kind, platform=device.platform)
  task = cartpole.CartPoleTask()
  env, pool, _ = cartpole.make_cartpole(task)
  rows = []
  for preset in args.speed_presets:
    config = cartpole.make_config(preset)
    rows += emit(
      [dict(tag, preset=preset, config=config.to_dict(), **r) for r in solve.speed(config, env, pool)], args.out
    )
  for seed in args.seeds if args.solve else ():
    config = cartpole.make_config(args.preset, seed=seed)
    result = solve.solve(config, task=task, max_train_s=60 * args.max_minutes, eval_every_s=args.eval_every_s)
    rows += emit([dict(tag, preset=args.preset, seed=seed, config=config.to_dict(), **result)], args.out)
  return rows
