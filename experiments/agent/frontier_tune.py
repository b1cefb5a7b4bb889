"""Teach the agent the frontier's outcomes: `python -m experiments.agent.frontier_tune --out FILE.npz`.

The packaged agent learned from its own episodes on `standard` and `masked`
worlds; the `muzero` method uses it for something else: at each cohort the
frontier search visits, the agent's search advantage refines the learned
ranking of its drill-downs. This command fine-tunes the agent on what that use
needs (`muzero_jax.fine_tune`): on the frontier walks of training
worlds of the benchmark's four planted families (`ranker_training.FAMILIES`,
indices from `ranker_training.FIRST_INDEX`, disjoint from every evaluation
world and from the validation worlds 0-19), the policy learns which drill-downs
lie on a path to a planted effect and the model's value of each drill-down's
successor learns its mark (`ranking.collect_positions`), so that the search's
Q of a move reads as the chance that it leads to a planted effect.

Each world's walk is seeded by the world's own seed and the fine-tuning by
`--seed`, so the command is deterministic on one machine. Positions are cached
in `--positions` (an `.npz`), reused when the file exists (the walk flags are
then those of the call that wrote it). The packaged agent's candidate was made
by `--worlds 12 --budget 300 --steps 1000 --seed 0` (benchmarks/README.md,
*Teaching the agent the frontier's outcomes*; not adopted).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys

import jax
import numpy as np

import muzero_jax
from cube_env.discovery import ranking
from experiments.agent.loading import PACKAGED, export_agent, load_agent
from experiments.launch.errors import UsageError
from experiments.launch.resume import refuse_repeated_flags
from experiments.quality.pool import limit_worker_threads
from experiments.quality.ranker_training import FAMILIES, FIRST_INDEX, training_space

FIELDS = ("obs", "legal", "marked", "actions", "labels", "weights")  # what the agent learns from
STORED = FIELDS + ("scores",)  # what the positions file keeps


def world_positions(family: str, index: int, *, budget: int, suite: str) -> ranking.Positions:
  """`ranking.collect_positions` on training world `index` of `family` (the packaged ranking's walk)."""
  space, case = training_space(family, index, suite)
  try:
    return ranking.collect_positions(space, case.truth, budget=budget, seed=case.seed)
  finally:
    jax.clear_caches()


def collect(worlds: int, *, budget: int, suite: str, workers: int, first_index: int = FIRST_INDEX) -> list:
  """`[(family, index, Positions)]` of `worlds` training worlds a family, in job order."""
  if first_index < FIRST_INDEX:
    raise ValueError(f"first_index {first_index}: training worlds below {FIRST_INDEX} are the validation worlds")
  jobs = [(f, first_index + i) for i in range(worlds) for f in FAMILIES]
  ctx = multiprocessing.get_context("spawn")
  done = {}
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=limit_worker_threads) as pool:
    futures = {pool.submit(world_positions, f, i, budget=budget, suite=suite): (f, i) for f, i in jobs}
    for future in concurrent.futures.as_completed(futures):
      key = futures[future]
      done[key] = future.result()
      p = done[key]
      print(
        f"world {key[0]} {key[1]}: {len(p.legal)} positions, {int(p.marked.any(axis=1).sum())} marked "
        f"({len(done)}/{len(jobs)})",
        flush=True,
      )
  return [(f, i, done[(f, i)]) for f, i in jobs]


def save_positions(path: str, walked: list) -> None:
  """One `.npz` with each world's arrays under `<k>/<field>` and the worlds' names in `worlds`."""
  arrays = {f"{k}/{f}": getattr(p, f) for k, (_, _, p) in enumerate(walked) for f in STORED}
  tmp = f"{path}.tmp.npz"
  np.savez_compressed(tmp, worlds=np.asarray(json.dumps([[f, i] for f, i, _ in walked])), **arrays)
  os.replace(tmp, path)


def load_positions(path: str) -> list:
  """`[(family, index, Positions)]` of a file of `save_positions` (one written before the walk's own score was
  stored loads with scores 0: the fine-tuning does not read them)."""
  out = []
  with np.load(path) as z:
    for k, (f, i) in enumerate(json.loads(str(z["worlds"]))):
      fields = [z[f"{k}/{x}"] for x in FIELDS]
      scores = z[f"{k}/scores"] if f"{k}/scores" in z.files else np.zeros(len(fields[0]))
      out.append((f, i, ranking.Positions(*fields, scores)))
  return out


def groups_by_shape(walked: list) -> list[muzero_jax.MarkedPositions]:
  """The positions of all worlds, one `MarkedPositions` per observation shape."""
  by: dict[tuple, list] = {}
  for _, _, p in walked:
    if len(p.legal):
      by.setdefault(p.obs.shape[1:], []).append(p)
  return [
    muzero_jax.MarkedPositions(*(np.concatenate([getattr(p, f) for p in ps]) for f in FIELDS)) for ps in by.values()
  ]


def print_terms(step: int, terms: dict) -> None:
  """`fine_tune`'s log: the step and its mean loss terms."""
  print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m experiments.agent.frontier_tune", description=__doc__.splitlines()[0]
  )
  parser.add_argument("--out", required=True, help="the fine-tuned agent's .npz (experiments.agent.export format)")
  parser.add_argument("--agent", default=None, help="the agent to start from (default: the packaged one)")
  parser.add_argument("--worlds", type=int, default=16, help="training worlds per family (default 16)")
  parser.add_argument("--budget", type=int, default=300, help="queries of each world's walk (default 300)")
  parser.add_argument("--suite", default="quick", help="the benchmark suite whose sizes the worlds take")
  parser.add_argument("--positions", default=None, help="cache of the walks' positions (.npz; reused if present)")
  parser.add_argument("--steps", type=int, default=2000, help="fine-tuning steps (default 2000)")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--learning-rate", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workers", type=int, default=2)
  try:
    refuse_repeated_flags(sys.argv[1:] if argv is None else argv)
  except UsageError as err:
    parser.error(str(err))
  args = parser.parse_args(argv)
  if not args.out.endswith(".npz"):
    parser.error(f"--out {args.out!r} must end in .npz")
  if args.positions and os.path.exists(args.positions):
    walked = load_positions(args.positions)
  else:
    walked = collect(args.worlds, budget=args.budget, suite=args.suite, workers=args.workers)
    if args.positions:
      save_positions(args.positions, walked)
  groups = groups_by_shape(walked)
  n = sum(len(g.legal) for g in groups)
  print(f"{n} positions in {len(groups)} shapes, {sum(int(g.marked.any(1).sum()) for g in groups)} marked", flush=True)
  agent = load_agent(args.agent)
  if not agent.any_grid:
    parser.error(f"--agent {args.agent!r} has dense policy heads (its own grid only); the walks' grids vary")
  tune = muzero_jax.FineTuneConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate)
  params, _ = muzero_jax.fine_tune(agent.params, agent.config, groups, seed=args.seed, tune=tune, log=print_terms)
  source = {
    "from": os.path.basename(args.agent or PACKAGED),
    "frontier_tune": {k: v for k, v in vars(args).items() if k not in ("out", "positions", "workers")},
    "walked": [[f, i] for f, i, _ in walked],  # the worlds the positions came from (a cache's, when reused)
    "positions": n,
  }
  export_agent(dataclasses.replace(agent, params=params, source=json.dumps(source)), args.out)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
