"""Tune hyperparameters with Nevergrad: `python -m experiments.tune --target ranker|agent`.

The objective uses training worlds only (`experiments.quality.tuning`).
`--target ranker` (the default): each candidate's learned frontier ranking is
fitted on the cached rows of `experiments.train_ranker --rows-file` (training
worlds 20 and up) and scored by `learned`'s mean recall on training worlds 0 to
`--worlds - 1` of standard, wide, deep and masked. `--target agent`: each
candidate MuZero agent (learning rate, imitation share, simulations, value loss
weight, n-step return: `tuning.AGENT_SPACE`) is trained for `--iterations` on
`--preset`'s cubes (training worlds from index 1,000) and scored by `muzero`'s
mean recall on the same tuning worlds, in `--agent-mode` (its own episodes by
default), after the preset's own settings at the same iterations
(`tune_baseline`, the score to read the tuning against). A full-length candidate costs a full training run (the `pretrain`
preset's 400 iterations: about 26 minutes on 2 CPU cores), so on a CPU the
agent is tuned at fewer iterations and the recommendation is worth a
full-length run and a validation before it replaces the packaged agent.
Prints one JSON line per evaluation and a last one with the recommendation;
`--out` also writes them to a file. It does not replace the packaged ranker:
fit it with the recommended settings (`python -m experiments.train_ranker
--hidden ... --steps ... --out cube_env/discovery/ranker.npz`) once a validation shows it better; nor does the agent
tuning replace the packaged agent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Literal

import tyro

from experiments.launch import compile_cache
from experiments.launch.cube_presets import PRESETS
from experiments.launch.errors import UsageError, exit_usage, prepare_out
from experiments.launch.resume import refuse_repeated_flags
from experiments.quality import ranker_training, tuning
from experiments.quality.suite import VALIDATION_WORLDS


@dataclasses.dataclass(frozen=True)
class Args:
  """Nevergrad over the ranker's or the agent's main hyperparameters (training worlds only). Flags marked Ranker
  or Agent apply to that target only."""

  target: Literal["ranker", "agent"] = "ranker"
  """What is tuned: the learned ranking (`tuning.RANKER_SPACE`) or the MuZero agent (`tuning.AGENT_SPACE`)."""
  rows_file: str | None = None
  """Ranker: training rows written by python -m experiments.train_ranker --rows-file (training worlds 20 and up)."""
  preset: str = "pretrain"
  """Agent: the preset whose cubes, network and learner each candidate trains with (its config under the tuned
  settings)."""
  iterations: int = 100
  """Agent: training iterations per candidate (the tuned imitation share is a share of these). The preset's own
  settings are scored first at the same iterations (`tune_baseline`)."""
  agent_mode: Literal["episodes", "frontier"] = "episodes"
  """Agent: what the objective scores, the agent's own episodes or muzero's default frontier mode."""
  budget: int = 8
  """Evaluations (each fits a ranker, or trains an agent, and runs it on the tuning worlds)."""
  worlds: int = 2
  """Training worlds per family scored by the objective (indices 0 to worlds - 1)."""
  families: tuple[str, ...] = ranker_training.FAMILIES
  """Families whose training worlds the objective scores (each needs planted effects)."""
  optimizer: str = "NGOpt"
  seed: int = 0
  """Nevergrad's draws (and the ranker's fits); an agent candidate trains with its preset's own seed."""
  workers: int = 2
  workdir: str = "runs/tune"
  """Rankers or agents, run rows and plots of the evaluations."""
  out: str | None = None


def main(args: Args) -> dict:
  if not 1 <= args.worlds <= VALIDATION_WORLDS:  # past them, the ranker's training worlds
    raise exit_usage(f"--worlds must be from 1 to {VALIDATION_WORLDS} (training worlds past them train the ranker)")
  if args.workers < 1:
    raise exit_usage("--workers must be at least 1")
  try:  # before the baseline trains (an audit: --budget 0 failed after it, with a traceback)
    tuning.check_tuning(budget=args.budget, optimizer=args.optimizer)
  except ValueError as err:
    raise exit_usage(
      str(err).replace("the tuning budget", "--budget").replace("Nevergrad optimizer", "--optimizer")
    ) from None
  unknown = sorted(set(args.families) - set(ranker_training.FAMILIES))
  if unknown or not args.families:
    raise exit_usage(
      f"--families {' '.join(unknown)}: must name some of {ranker_training.FAMILIES} (families with planted effects)"
    )
  rows = None
  if args.target == "ranker":
    if args.rows_file is None:
      raise exit_usage("--target ranker needs --rows-file (python -m experiments.train_ranker --rows-file F)")
    if not os.path.exists(args.rows_file):
      raise exit_usage(
        f"--rows-file {args.rows_file!r} does not exist (python -m experiments.train_ranker --rows-file)"
      )
    try:  # read now (an audit: a CSV, or an .npz of other arrays, was numpy's traceback)
      rows = ranker_training.load_rows(args.rows_file)
    except ValueError as err:
      raise exit_usage(f"--rows-file: {err}") from None
  else:
    if args.preset not in PRESETS:
      raise exit_usage(f"--preset {args.preset!r} is not one of {sorted(PRESETS)}")
    if args.iterations < 1:
      raise exit_usage("--iterations must be at least 1")
  # Where the results go, made before the work (an audit: a missing --out folder was a traceback after the whole run).
  if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
    raise exit_usage(f"--workdir {args.workdir!r} is a file, not a folder")
  try:
    os.makedirs(args.workdir, exist_ok=True)
  except OSError as err:
    raise exit_usage(f"--workdir {args.workdir!r}: cannot make it ({err.strerror or err})") from None
  if args.out:
    try:
      prepare_out(args.out, "--out")
    except ValueError as err:
      raise exit_usage(str(err)) from None
  if args.target == "ranker":
    objective = tuning.ranker_objective(
      rows, worlds=args.worlds, workdir=args.workdir, seed=args.seed, workers=args.workers, families=args.families
    )
    space = tuning.RANKER_SPACE
  else:
    objective = tuning.agent_objective(
      preset=args.preset,
      iterations=args.iterations,
      worlds=args.worlds,
      workdir=args.workdir,
      mode=args.agent_mode,
      workers=args.workers,
      families=args.families,
    )
    space = tuning.AGENT_SPACE
  t0 = time.perf_counter()
  lines = []

  def log(row: dict, kind: str = "tune_step") -> None:
    line = json.dumps(dict(kind=kind, **row, seconds=time.perf_counter() - t0), sort_keys=True)
    print(line, flush=True)
    lines.append(line)

  baseline = None
  if args.target == "agent":  # the preset's own settings, scored by the same objective, to read the tuning against
    settings = tuning.preset_settings(args.preset)
    baseline = dict(settings=settings, score=float(objective(settings)))
    log(baseline, kind="tune_baseline")

  best, history = tuning.tune(objective, space, budget=args.budget, seed=args.seed, optimizer=args.optimizer, log=log)
  result = dict(
    kind="tune_result",
    target=args.target,
    recommended=best,
    best_seen=max(history, key=lambda r: r["score"]),
    baseline=baseline,
    budget=args.budget,
    worlds=args.worlds,
    families=list(args.families),
    optimizer=args.optimizer,
    seed=args.seed,
    seconds=time.perf_counter() - t0,
  )
  lines.append(json.dumps(result, sort_keys=True))
  print(lines[-1], flush=True)
  if args.out:
    with open(args.out, "w") as handle:
      handle.write("\n".join(lines) + "\n")
  return result


if __name__ == "__main__":
  compile_cache.enable()
  try:
    refuse_repeated_flags(sys.argv[1:])
  except UsageError as err:
    raise exit_usage(str(err)) from None
  main(tyro.cli(Args))
