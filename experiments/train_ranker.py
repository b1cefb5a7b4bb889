"""Fit the learned frontier ranking on training worlds: `python -m experiments.train_ranker`.

Collects rows from `--worlds-per-family` training worlds of each family with
planted effects (`experiments.quality.ranker_training`), fits
`cube_env.discovery.ranking.RankerWeights` and writes them to `--out` (default
`ranker.npz` here; the packaged ranker that `discover --method learned` and the
`learned` method use is `cube_env/discovery/ranker.npz`, written only when named:
an installed package is never a default target, a packaging audit). It prints one JSON line with the row counts, the fit's training-row AUC
and the time. Validate on other training worlds (indices 0-19) with
`python -m experiments.benchmark quality --split train`.

The packaged ranker is a warm start and one self-play round, two calls with
the other flags at their defaults:

  python -m experiments.train_ranker --rows-file runs/ranker_rows.npz --out runs/warm.npz
  python -m experiments.train_ranker --behaviour runs/warm.npz --noise 0.5 --first-index 44 \
    --rows-file runs/ranker_self1.npz --add-rows runs/ranker_rows.npz --out cube_env/discovery/ranker.npz

The first walks training worlds 20-43 by the pixel heuristic (plus noise);
the second walks worlds 44-67 by the first's own ranking (noise 0.5 in
log-odds), so its rows are where the learned search goes, and fits both sets
of rows together (DAgger's aggregation).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np
import tyro

from cube_env.discovery import ranking
from cube_env.worlds import AGENT_WORLD_INDEX
from experiments.launch import compile_cache
from experiments.launch.errors import UsageError, exit_usage, prepare_out
from experiments.launch.resume import refuse_repeated_flags
from experiments.quality import ranker_training


@dataclasses.dataclass(frozen=True)
class Args:
  """Fit the frontier ranking on training worlds."""

  worlds_per_family: int = 24
  """Training worlds of each family (standard, wide, deep, masked), from index 20 of the training split."""
  budget: int = 300
  """Queries of the noisy frontier search that collects each world's rows."""
  hidden: int = 8
  """Units of each hidden layer (8 and 3,000 steps beat 32 and 1,000 on the training-world validation)."""
  steps: int = 3000
  seed: int = 0
  drop: tuple[str, ...] = ()
  """Features the ranker must not read (an ablation; names in cube_env.discovery.ranking.FEATURES)."""
  first_index: int = ranker_training.FIRST_INDEX
  """Index of the first training world (at least 20: worlds 0-19 of the training split are for validation)."""
  behaviour: str | None = None
  """Ranker weights (.npz) whose ranking walks the worlds that collect the rows (a self-play round: rows from where
  the learned search itself goes); default the pixel heuristic (the warm start)."""
  noise: float = 0.05
  """Width of the uniform noise added to the walk's ranking, in its units (|z| / 10 for the heuristic, log-odds for
  a ranker)."""
  workers: int = 2
  rows_file: str | None = None
  """Cache of the collected rows (.npz): read when it exists (then --worlds-per-family, --budget, --first-index,
  --behaviour and --noise are not used), written otherwise."""
  add_rows: tuple[str, ...] = ()
  """Cached rows (.npz from --rows-file) fitted together with this call's rows (rounds aggregated)."""
  bag: int = 1
  """Members of a bagged ranker (`ranking.fit_bagged`; 1: one fit). Each member weights every world's rows by how
  often a bootstrap resample of its file's worlds drew it (seed --seed + member); the members are merged into one
  network whose log-odds are their mean."""
  out: str = "ranker.npz"
  """Where the weights go; the packaged ranker (what --method learned plays) is cube_env/discovery/ranker.npz."""


def read_rows(path: str, flag: str) -> tuple[np.ndarray, ...]:
  """`ranker_training.read_rows(path)`, its errors as usage errors naming `flag`."""
  try:
    return ranker_training.read_rows(path)
  except ValueError as err:
    raise exit_usage(f"{flag}: {err}") from None


def main(args: Args) -> dict:
  if min(args.worlds_per_family, args.budget, args.hidden, args.steps, args.bag, args.workers) < 1:
    raise exit_usage("--worlds-per-family, --budget, --hidden, --steps, --bag and --workers must be at least 1")
  try:  # before the collection, which takes minutes (an audit: the fit's error came at its end)
    ranking.check_drop(args.drop)
  except ValueError as err:
    raise exit_usage(f"--drop: {err}") from None
  for path in filter(None, (args.rows_file, *args.add_rows)):
    if not path.endswith(".npz"):
      raise exit_usage(f"--rows-file and --add-rows take .npz files (numpy adds the suffix otherwise), got {path!r}")
  missing = [p for p in args.add_rows if not os.path.exists(p)]
  if missing:
    raise exit_usage(f"--add-rows: {', '.join(missing)} do not exist (write them with --rows-file)")
  if args.behaviour is not None:
    try:  # read here, not first in the collection's workers (an audit: their traceback, after it began)
      ranking.load(args.behaviour)
    except ValueError as err:
      raise exit_usage(f"--behaviour: {err}") from None
  if args.first_index < ranker_training.FIRST_INDEX:
    raise exit_usage(
      f"--first-index must be at least {ranker_training.FIRST_INDEX} (training worlds below it validate), "
      f"got {args.first_index}"
    )
  if args.first_index + args.worlds_per_family > AGENT_WORLD_INDEX:  # an integrity audit: 980 + 24 reached them
    raise exit_usage(
      f"--first-index + --worlds-per-family must stay at most {AGENT_WORLD_INDEX} (the agent's training "
      f"worlds start there), got {args.first_index} + {args.worlds_per_family}"
    )
  if not args.noise >= 0:
    raise exit_usage(f"--noise must be >= 0, got {args.noise}")
  # The files read and the folders written, before the collection and the fit (an audit: an .npz of other arrays was
  # a KeyError, a missing --out folder a traceback at the save, after the work).
  cached = bool(args.rows_file and os.path.exists(args.rows_file))
  rows = read_rows(args.rows_file, "--rows-file") if cached else None
  added = [read_rows(p, "--add-rows") for p in args.add_rows]
  try:
    prepare_out(args.out, "--out")
    if args.rows_file and not cached:
      prepare_out(args.rows_file, "--rows-file")
  except ValueError as err:
    raise exit_usage(str(err)) from None
  t0 = time.perf_counter()
  if rows is not None:
    x, y, w, world = rows
  else:
    x, y, w, world = ranker_training.training_rows(
      args.worlds_per_family,
      budget=args.budget,
      workers=args.workers,
      first_index=args.first_index,
      behaviour=args.behaviour,
      noise=args.noise,
    )
    if args.rows_file:
      ranker_training.save_rows(args.rows_file, x, y, w, world)
  file_of = np.zeros(len(y), np.int64)  # which file (round) each row came from: bagging resamples within it
  if added:
    parts = [(x, y, w)] + [part[:3] for part in added]
    worlds = [world] + [part[3] for part in added]
    x, y, w = (np.concatenate(p) for p in zip(*parts, strict=True))
    file_of = np.concatenate([np.full(len(v), i) for i, v in enumerate(worlds)])
    world = np.concatenate(worlds)
  t1 = time.perf_counter()
  fit_args = dict(seed=args.seed, hidden=args.hidden, steps=args.steps, sample_weight=w, drop=args.drop)
  if args.bag == 1:
    weights = ranking.fit(x, y, **fit_args)
  else:
    weights = ranking.fit_bagged(x, y, groups=world, strata=file_of, members=args.bag, **fit_args)
  ranking.save(weights, args.out)
  row = dict(
    kind="ranker",
    out=args.out,
    rows_file=args.rows_file,
    rows_from_cache=cached,  # then the collection settings below did not make these rows
    rows=int(len(y)),
    positives=int(y.sum()),
    worlds_per_family=args.worlds_per_family,
    budget=args.budget,
    first_index=args.first_index,
    behaviour=args.behaviour,
    noise=args.noise,
    add_rows=list(args.add_rows),
    hidden=args.hidden,
    bag=args.bag,
    steps=args.steps,
    seed=args.seed,
    drop=list(args.drop),
    train_auc=ranking.auc(weights.logits(x), y, w),
    pixel_auc=ranking.auc(x[:, ranking.FEATURES.index("z")], y, w),
    collect_s=t1 - t0,
    fit_s=time.perf_counter() - t1,
  )
  print(json.dumps(row, sort_keys=True), flush=True)
  return row


if __name__ == "__main__":
  compile_cache.enable()
  try:
    refuse_repeated_flags(sys.argv[1:])
  except UsageError as err:
    raise exit_usage(str(err)) from None
  main(tyro.cli(Args))
