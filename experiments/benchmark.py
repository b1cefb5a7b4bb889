"""Benchmarks: `python -m experiments.benchmark {env,search,selfplay,checkpoint,quality,speed,cartpole,power}`.

  env       environment steps/s vs cube cells and batch, beside today's step and the bare reduction; memory
  search    mctx search simulations/s and the overhead ratio (search / network-only time)
  selfplay  self-play moves/s, learner updates/s, training moves/s (self-play with updates), now and as before
  cartpole  MuZero on gymnax CartPole-v1: moves/s, learner steps/s, wall time to a greedy mean return >= 475
  checkpoint  Orbax save (blocking part and until on disk), full restore and params-only load times
  quality   discovery recall/precision per query budget: muzero vs baselines vs pysubgroup (experiments/quality)
  speed     every speed figure above in one run, with linearity checks in cells and batch (experiments/speed)
  power     recall, precision and FWER of discovery settings by exhaustive search over random worlds

Each prints machine-readable JSON lines (one per measurement) to stdout and,
with `--out FILE`, appends them to FILE. Speed targets live here, not in
tests. This module parses flags and calls `experiments.speed`,
`experiments.quality` and `experiments.control`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterable

import tyro

from cube_env import worlds
from cube_env.environment.groupby import GROUPBY_METHODS
from experiments.control import bench as control_bench
from experiments.launch import compile_cache
from experiments.launch.cube_presets import PRESETS
from experiments.launch.errors import UsageError, exit_usage
from experiments.launch.resume import refuse_repeated_flags
from experiments.quality import power as quality_power
from experiments.quality import session as quality_session
from experiments.quality.pool import json_line
from experiments.speed import agent as agent_speed
from experiments.speed import checkpoint_cost, env_speed, scaling
from experiments.speed import suite as speed_suite


def _emit(rows: Iterable[dict], out: str | None) -> list[dict]:
  """Prints each row as a JSON line (and appends it to `out`, whose directory is made as the plot's is: a missing
  one was a traceback after the work) as it comes; returns the rows."""
  done = []
  if out:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "a") if out else contextlib.nullcontext() as handle:
    for row in rows:
      line = json_line(row)
      print(line, flush=True)
      if handle:
        handle.write(line + "\n")
        handle.flush()  # a killed run keeps every row it printed
      done.append(row)
  return done


@dataclasses.dataclass(frozen=True)
class Env:
  """Environment steps/s against cube cells and batch, beside today's dense step and the bare reduction."""

  cells: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
  batches: tuple[int, ...] = (1, 16, 64)
  methods: tuple[str, ...] | None = None
  """Group-by formulations timed (default: cube_env.default_groupby(), the cell index)."""
  max_work: float = 2e7
  """Skip configurations with cells x batch above this (use 1e12 on a GPU)."""
  reference_max_work: float = 2e6
  """Time today's dense step only up to this cells x batch (its memory grows as cells x batch x columns)."""
  out: str | None = None


def _check_known(flag: str, given: Iterable[str], known: Iterable[str]) -> None:
  """A usage error naming `flag` for a name not in `known` (found before any work: a bad name was a traceback, or a
  KeyError after other measurements had run)."""
  known = tuple(known)
  unknown = [name for name in given if name not in known]
  if unknown:
    raise exit_usage(f"error: unknown {flag} {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")


def _check_at_least(minimum: int, **flags: Iterable[int]) -> None:
  """A usage error naming the first flag (`name=values`, `--name` on the command line) with a value below `minimum`."""
  for name, values in flags.items():
    low = [v for v in values if v < minimum]
    if low:
      raise exit_usage(f"error: --{name.replace('_', '-')} must be at least {minimum}, got {low[0]}")


def _check_env(cells, batches, max_work: float, reference_max_work: float, methods, flag: str) -> None:
  """The env figures' flags (`env`'s, and `speed`'s, which ran cells 0 into a traceback); `flag` names the
  group-by formulations' flag."""
  if min((*cells, *batches), default=1) < 1 or not min(max_work, reference_max_work) > 0:
    raise exit_usage("error: --cells and --batches must be at least 1 and --max-work, --reference-max-work above 0")
  _check_known(flag, methods or (), GROUPBY_METHODS)


def run_env(args: Env) -> list[dict]:
  _check_env(args.cells, args.batches, args.max_work, args.reference_max_work, args.methods, "--methods")
  rows = _emit(
    env_speed.env_speed_rows(args.cells, args.batches, args.methods, args.max_work, args.reference_max_work),
    args.out,
  )
  return rows + _emit(scaling.slopes(rows, x="cells", group="batch", bench="env_scaling"), args.out)


@dataclasses.dataclass(frozen=True)
class AgentSpeed:
  """MuZero speed on the cube task: search (with overhead ratio), self-play, learner."""

  preset: str = "smoke"
  """experiments.train preset for the network and cube sizes."""
  batch_sizes: tuple[int, ...] = (1, 16, 64)
  """Search batch sizes (search) or environments (selfplay) or learner batches (learner)."""
  learner_loops: tuple[str, ...] = ()
  """selfplay: training rows with each of these `MuZeroConfig.learner_loop` settings (none given: the preset's)."""
  out: str | None = None


def _check_agent_speed(args: AgentSpeed) -> None:
  _check_known("--preset", (args.preset,), PRESETS)
  _check_at_least(1, batch_sizes=args.batch_sizes)


def run_search_speed(args: AgentSpeed) -> list[dict]:
  _check_agent_speed(args)
  return _emit(agent_speed.search_rows(agent_speed.agent_setup(args.preset), args.batch_sizes), args.out)


def run_selfplay_speed(args: AgentSpeed) -> list[dict]:
  _check_agent_speed(args)
  setup = agent_speed.agent_setup(args.preset)
  rows = _emit(agent_speed.selfplay_rows(setup, args.batch_sizes), args.out)
  rows += _emit(agent_speed.selfplay_rows(setup, args.batch_sizes, reference=True), args.out)
  rows += _emit(agent_speed.learner_rows(setup, (setup[0].batch_size,)), args.out)
  loops = args.learner_loops or (None,)
  train = [r for loop in loops for r in agent_speed.training_rows(setup, learner_loop=loop)]
  train += agent_speed.training_rows(setup, reference=True)
  rows += _emit(train, args.out)
  return rows + _emit(speed_suite.speedup_summary(train, "training"), args.out)


@dataclasses.dataclass(frozen=True)
class CheckpointCost:
  """Checkpoint cost of a preset's whole training state (parameters, optimiser, a replay full of random values,
  actors): the blocking part of an asynchronous save, the time until it is on disk, a verified full restore
  and a parameters-only load."""

  preset: str = "cpu"
  """experiments.train preset whose training state is saved."""
  repeats: int = 3
  """Saves (and restores) timed; each into a fresh directory."""
  out: str | None = None


def run_checkpoint_cost(args: CheckpointCost) -> list[dict]:
  _check_known("--preset", (args.preset,), PRESETS)
  _check_at_least(1, repeats=(args.repeats,))  # 0 measured nothing and said nothing
  return _emit(checkpoint_cost.checkpoint_rows(args.preset, repeats=args.repeats), args.out)


@dataclasses.dataclass(frozen=True)
class Quality:
  """Discovery quality per cost: every method (enumeration, auto, the walkers, pysubgroup; the muzero agent on
  request) on unseen random worlds (cube_env.worlds), budgets from 0.1% to 100% of enumeration's queries (fixed
  counts on wide and deep worlds); recall, precision, family-wise error, and three costs: queries, rows scanned and
  wall seconds (experiments/quality)."""

  suite: str = "quick"
  """quick (3 worlds of 10,000 rows per family; walkers to 5%, fixed budgets to 1,000: about 30 minutes on 2 CPU
  cores), standard (10 worlds per family, same sizes: about 90 minutes), full (20 worlds of 50,000 rows,
  walkers to 20%, fixed budgets to 3,000: for a GPU) or tiny."""
  checkpoint: str | None = None
  """Agent for the muzero method (a directory written by experiments.train, or an .npz exported from one by
  experiments.agent.export). Without it the packaged agent plays."""
  methods: tuple[str, ...] | None = None
  """Subset of methods (default: the suite's)."""
  scenarios: tuple[str, ...] | None = None
  """Subset of world families (default: the suite's: standard wide deep masked null confounded)."""
  plot: str | None = None
  """Plot path (default: recall_vs_budget.png beside --out, or in runs/ without --out)."""
  workers: int | None = None
  """Cases run at once in separate processes (default: 2 on a CPU with 2+ cores, 1 on a GPU; more on one GPU
  needs XLA_PYTHON_CLIENT_PREALLOCATE=false)."""
  seeds: int | None = None
  """Worlds per family (default: the suite's)."""
  time_limit_s: float | None = None
  """Start no case after this many seconds (a started case finishes; cases go seed by seed across scenarios)."""
  split: str | None = None
  """Worlds of the evaluation split (default) or the training split (train: for --sweep)."""
  sweep: bool = False
  """Also run every method setting of experiments.quality.suite.SWEEP (training worlds only: --split train)."""
  out: str | None = None
  """JSON lines file. Its run rows of the same suite and sizes are kept and not run again (use a new file for a
  fresh run); the rows of a killed call, kept in OUT.partial by the workers, are merged too."""


def run_quality_benchmark(args: Quality) -> list[dict]:
  try:  # the request is checked before any world is drawn: its errors are usage errors
    return quality_session.run_quality(
      args.suite,
      checkpoint=args.checkpoint,
      method_names=args.methods,
      plot_path=args.plot,
      out=args.out,
      emit=_emit,
      scenarios=args.scenarios,
      workers=args.workers,
      seeds=args.seeds,
      time_limit_s=args.time_limit_s,
      split=args.split,
      sweep=args.sweep,
    )
  except UsageError as err:
    raise exit_usage(f"error: {err}") from None


@dataclasses.dataclass(frozen=True)
class Speed:
  """All speed figures in one run: env vs cells and batch, search, self-play, learner, training, compile times."""

  cells: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
  batches: tuple[int, ...] = (1, 16, 64)
  """Environment batch sizes (vmapped states)."""
  max_work: float = 2e7
  """Skip env configurations with cells x batch above this (use 1e12 on a GPU; one that runs out of device
  memory gets an `error` row and the run goes on)."""
  reference_max_work: float = 2e6
  """Time today's dense step only up to this cells x batch (its memory grows as cells x batch x columns)."""
  groupby: tuple[str, ...] | None = None
  """Group-by formulations of the env figures (default: cube_env.default_groupby(), the cell index)."""
  profile_cells: tuple[int, ...] = (10_000, 100_000, 1_000_000)
  """Cube sizes of the step profile (where a batch-1 step's time goes)."""
  table_rows: int = 60_000
  """Rows of the analyst's table (12 filter columns, 5 measures) timed per query, new and today's step (0: skip)."""
  wide_rows: int = 1_000_000
  """Rows of the wide table (40 filter columns) timed for ingest and per query (0: skip)."""
  preset: str = "cpu"
  """experiments.train preset for the agent figures."""
  search_batches: tuple[int, ...] = (1, 16, 64)
  selfplay_envs: tuple[int, ...] = (8, 32)
  learner_batches: tuple[int, ...] = (32, 128)
  out: str | None = None


def run_speed(args: Speed) -> list[dict]:
  # Every flag before the first measurement (an unknown --preset was a KeyError after the env figures' minutes).
  _check_env(args.cells, args.batches, args.max_work, args.reference_max_work, args.groupby, "--groupby")
  _check_known("--preset", (args.preset,), PRESETS)
  _check_at_least(
    1,
    profile_cells=args.profile_cells,
    search_batches=args.search_batches,
    selfplay_envs=args.selfplay_envs,
    learner_batches=args.learner_batches,
  )
  _check_at_least(0, table_rows=(args.table_rows,), wide_rows=(args.wide_rows,))
  settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name != "out"}
  return speed_suite.run_speed_suite(**settings, emit=lambda rows: _emit(rows, args.out))


@dataclasses.dataclass(frozen=True)
class Power:
  """Recall, precision and FWER of discovery settings by `exhaustive` over random worlds (issue 16)."""

  families: tuple[str, ...] = ("standard", "null", "confounded")
  """World families (cube_env.worlds.WORLD_FAMILIES); null and confounded ones score the family-wise error."""
  worlds: int = 20
  """Worlds per family."""
  settings: tuple[str, ...] = ("old", "default")
  """Named settings (experiments.quality.power.SETTINGS): old = the defaults before issue 16, default = today's."""
  split: str = "eval"
  """Seeds of the training or evaluation split (choose settings on train, report on eval)."""
  rows: int | None = None
  """Rows per world (default: the family's, 50,000)."""
  max_depth: int = 3
  first: int = 0
  """Index of the first world (to extend a run)."""
  out: str | None = None


def run_power(args: Power) -> list[dict]:
  unknown = [s for s in args.settings if s not in quality_power.SETTINGS]
  if unknown:
    raise exit_usage(f"error: unknown --settings {unknown}; choose from {sorted(quality_power.SETTINGS)}")
  unknown = [f for f in args.families if f not in worlds.FAMILIES]
  if unknown:
    raise exit_usage(f"error: unknown --families {unknown}; choose from {', '.join(worlds.FAMILIES)}")
  if args.split not in worlds.SPLITS:
    raise exit_usage(f"error: --split must be one of {', '.join(worlds.SPLITS)}, got {args.split!r}")
  if min(args.worlds, args.max_depth) < 1 or args.first < 0 or (args.rows is not None and args.rows < 1000):
    raise exit_usage("error: --worlds and --max-depth must be at least 1, --rows at least 1000 and --first at least 0")
  settings = [quality_power.SETTINGS[s] for s in args.settings]
  # The machine first (a timing's context, as every other command's rows give it; an audit found none).
  _emit([{**speed_suite.device_row(), "versions": quality_session.host_versions()}], args.out)
  rows = _emit(
    quality_power.power_rows(
      args.families,
      args.worlds,
      settings,
      split=args.split,
      rows=args.rows,
      max_depth=args.max_depth,
      first=args.first,
    ),
    args.out,
  )
  return rows + _emit(quality_power.summarize(rows), args.out)


def run_cartpole(args: control_bench.CartPole) -> list[dict]:
  try:
    control_bench.check(args)
  except ValueError as err:
    raise exit_usage(f"error: {err}") from None
  return control_bench.run(args, _emit)


COMMANDS = {
  "env": (Env, run_env),
  "search": (AgentSpeed, run_search_speed),
  "selfplay": (AgentSpeed, run_selfplay_speed),
  "checkpoint": (CheckpointCost, run_checkpoint_cost),
  "quality": (Quality, run_quality_benchmark),
  "speed": (Speed, run_speed),
  "cartpole": (control_bench.CartPole, run_cartpole),
  "power": (Power, run_power),
}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  usage = f"usage: python -m experiments.benchmark {{{','.join(COMMANDS)}}} [--help]"
  if argv and argv[0] in ("-h", "--help"):  # the commands, as the module docstring lists them (a packaging audit)
    print(
      usage
      + "\n\n"
      + __doc__.split("\n\n")[1]
      + "\n\n`python -m experiments.benchmark COMMAND --help` lists its flags."
    )
    return 0
  if not argv or argv[0] not in COMMANDS:
    print(usage, file=sys.stderr)
    return 2
  cls, fn = COMMANDS[argv[0]]
  try:
    refuse_repeated_flags(argv[1:])
  except UsageError as err:
    raise exit_usage(str(err)) from None
  fn(tyro.cli(cls, args=argv[1:], prog=f"experiments.benchmark {argv[0]}"))
  return 0


if __name__ == "__main__":
  compile_cache.enable()
  sys.exit(main())
