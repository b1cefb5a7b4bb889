"""Tune the learned frontier ranking's hyperparameters with Nevergrad: `python -m experiments.tune`.

The objective uses training worlds only (`experiments.quality.tuning`): each
candidate's ranker is fitted on the cached rows of `experiments.train_ranker
--rows-file` (training worlds 20 and up) and scored by `learned`'s mean recall
on training worlds 0 to `--worlds - 1` of standard, wide, deep and masked.
Prints one JSON line per evaluation and a last one with the recommendation;
`--out` also writes them to a file. It does not replace the packaged ranker:
fit it with the recommended settings (`python -m experiments.train_ranker
--hidden ... --steps ...`) once a validation shows it better.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import tyro

from experiments.quality import ranker_training, tuning


@dataclasses.dataclass(frozen=True)
class Args:
  """Nevergrad over the ranker's hidden units, steps, learning rate and weight decay (training worlds only)."""

  rows_file: str
  """Training rows written by python -m experiments.train_ranker --rows-file (training worlds 20 and up)."""
  budget: int = 8
  """Evaluations (each fits a ranker and runs `learned` on the tuning worlds)."""
  worlds: int = 2
  """Training worlds per family scored by the objective (indices 0 to worlds - 1)."""
  optimizer: str = "NGOpt"
  seed: int = 0
  workers: int = 2
  workdir: str = "runs/tune"
  """Rankers, run rows and plots of the evaluations."""
  out: str | None = None


def main(args: Args) -> dict:
  if not os.path.exists(args.rows_file):
    raise SystemExit(f"--rows-file {args.rows_file!r} does not exist (python -m experiments.train_ranker --rows-file)")
  if args.worlds < 1:
    raise SystemExit("--worlds must be at least 1")
  rows = ranker_training.load_rows(args.rows_file)
  objective = tuning.ranker_objective(
    rows, worlds=args.worlds, workdir=args.workdir, seed=args.seed, workers=args.workers
  )
  t0 = time.perf_counter()
  lines = []

  def log(row: dict) -> None:
    line = json.dumps(dict(kind="tune_step", **row, seconds=time.perf_counter() - t0), sort_keys=True)
    print(line, flush=True)
    lines.append(line)

  best, history = tuning.tune(
    objective, tuning.RANKER_SPACE, budget=args.budget, seed=args.seed, optimizer=args.optimizer, log=log
  )
  result = dict(
    kind="tune_result",
    recommended=best,
    best_seen=max(history, key=lambda r: r["score"]),
    budget=args.budget,
    worlds=args.worlds,
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
  main(tyro.cli(Args))
