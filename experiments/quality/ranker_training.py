"""Training rows for the learned frontier ranking from the benchmark's training worlds (`cube_env.discovery.ranking`).

The worlds are the suites' own families and sizes, drawn from the training
split only, at world indices from `FIRST_INDEX` on, so that they are disjoint
from the evaluation worlds (another seed range, `worlds.split_of`) and from
the training worlds the settings sweep and the ranker's validation use
(`--split train`, indices 0 to 19).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import zipfile
from collections.abc import Callable, Iterable

import jax
import numpy as np

from cube_env.discovery import ranking
from cube_env.discovery.space import Space
from experiments.quality.pool import limit_worker_threads
from experiments.quality.runner import prepare_case
from experiments.quality.suite import SUITES, VALIDATION_WORLDS, Case, make_case

FAMILIES = ("standard", "wide", "deep", "masked")  # families with planted effects
# Training-world indices from here on: past those the sweep and `--split train` validation use.
FIRST_INDEX = VALIDATION_WORLDS


def save_rows(path: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, world: np.ndarray) -> None:
  """Writes `training_rows`' output to `path` (.npz), the cache `train_ranker` and `tune` read with `load_rows`."""
  np.savez(path, x=x, y=y, w=w, world=world)


ROW_ARRAYS = ("x", "y", "w", "world")  # the arrays of a file of `save_rows`


def read_rows(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(features, labels, weights, world) from a file of `save_rows`; ValueError naming the file unless it is one: an
  .npz of `ROW_ARRAYS`, `[N, NUM_FEATURES]` finite features and `[N]` the others (an audit: a CSV was numpy's
  `allow_pickle` hint, an .npz of other arrays a KeyError, both tracebacks). Never unpickles."""
  what = f"{path!r} is not a rows file"
  make = "write one with python -m experiments.train_ranker --rows-file"
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{what}: not an .npz archive ({make})")
  try:
    with np.load(path, allow_pickle=False) as z:
      found = set(z.files)
      arrays = [z[k] for k in ROW_ARRAYS] if found >= set(ROW_ARRAYS) else None
  except Exception as err:  # noqa: BLE001 (a damaged or foreign file is the user's input problem)
    raise ValueError(f"{path!r}: rows cannot be read ({ranking.unreadable(err)})") from None
  if arrays is None:
    raise ValueError(f"{what}: it has no {', '.join(ROW_ARRAYS)} arrays (it has {', '.join(sorted(found)) or 'none'})")
  x, y, w, world = arrays
  n = len(x) if x.ndim else 0
  if x.ndim != 2 or x.shape[1] != ranking.NUM_FEATURES:
    raise ValueError(f"{what}: x is {x.shape}, not [rows, {ranking.NUM_FEATURES} columns] (the ranker's features)")
  wrong = [f"{k} {a.shape}" for k, a in zip(ROW_ARRAYS[1:], arrays[1:], strict=True) if a.shape != (n,)]
  if wrong:
    raise ValueError(f"{what}: {', '.join(wrong)}, not one value per row of x ({n} rows)")
  if not all(a.dtype.kind in "biuf" for a in arrays):
    raise ValueError(f"{what}: its arrays must be numbers, got {', '.join(str(a.dtype) for a in arrays)}")
  if not (np.isfinite(x).all() and np.isfinite(w).all()):
    raise ValueError(f"{what}: its features or weights hold NaN or infinite values")
  return x, y, w, world


def load_rows(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(features, labels, weights) from a file of `save_rows` (`read_rows`: ValueError unless it is one)."""
  return read_rows(path)[:3]


def load_worlds(path: str) -> np.ndarray:
  """`[N]` each row's world (its position in the collecting call's job order) from a file of `save_rows`."""
  return read_rows(path)[3]


def world_rows(
  family: str,
  index: int,
  *,
  budget: int,
  suite: str = "standard",
  behaviour: str | None = None,
  noise: float = 0.05,
) -> tuple[np.ndarray, ...]:
  """(features, labels, weights) of training world `index` of `family`, at the suite's rows and depth; the walk
  ranked by the pixel heuristic, or by the ranker in the `behaviour` weights file (a self-play round), plus
  uniform noise of width `noise` (`ranking.collect`)."""
  space, case = training_space(family, index, suite)
  try:
    walk = None if behaviour is None else ranking.learned_ranker(ranking.load(behaviour))
    return ranking.collect(space, case.truth, budget=budget, seed=case.seed, behaviour=walk, noise=noise)
  finally:
    jax.clear_caches()  # each world's shapes compile their own programs (see pool.case_in_worker)


def training_space(family: str, index: int, suite: str = "standard") -> tuple[Space, Case]:
  """(search space, case) of training world `index` of `family` at the suite's rows and depth."""
  base = dataclasses.replace(SUITES[suite], split="train")
  case = make_case(family, index, base)
  if case.split != "train":
    raise RuntimeError(f"world {family} {index} is not a training world")
  return prepare_case(case, max_depth=base.depth(family)).prepared.space, case


def training_rows(
  worlds_per_family: int,
  *,
  budget: int,
  families: Iterable[str] = FAMILIES,
  workers: int = 2,
  first_index: int = FIRST_INDEX,
  behaviour: str | None = None,
  noise: float = 0.05,
  log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(features, labels, weights, world) rows of `worlds_per_family` training worlds of each family (indices from
  `first_index`, at least `FIRST_INDEX`), collected in `workers` processes (`world_rows`: `behaviour`, `noise`);
  `world` is the row's world's position in job order."""
  if first_index < FIRST_INDEX:
    raise ValueError(f"first_index {first_index}: training worlds below {FIRST_INDEX} are the validation worlds")
  jobs = [(f, first_index + i) for i in range(worlds_per_family) for f in families]
  parts: dict[tuple, tuple] = {}
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=limit_worker_threads) as pool:
    futures = {pool.submit(world_rows, f, i, budget=budget, behaviour=behaviour, noise=noise): (f, i) for f, i in jobs}
    for future in concurrent.futures.as_completed(futures):
      key = futures[future]
      parts[key] = future.result()
      x, y, _ = parts[key]
      log(f"world {key[0]} {key[1]}: {len(y)} rows, {int(y.sum())} on a planted path ({len(parts)}/{len(jobs)})")
  ordered = [parts[k] for k in jobs]  # job order, so the rows do not depend on which worker finished first
  x, y, w = (np.concatenate(p) for p in zip(*ordered, strict=True))
  world = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(ordered)])
  return x, y, w, world
