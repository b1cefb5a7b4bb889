"""Cases of a suite in worker processes, and the spill file (OUT.partial) that keeps a killed run's rows.

Every query is still one sequential environment step inside its case; only
whole cases overlap. Each worker appends every row it makes to the spill file
as it makes it, so rows of a case cut short by a killed run are not lost
(`experiments.quality.session` merges them on its next call).
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator

import jax

from experiments.launch import compile_cache
from experiments.quality.runner import SuiteMethod, build_methods, run_case
from experiments.quality.suite import Suite, case_order, check_seed_split, make_case

_WORKER_METHODS: dict = {}  # per worker process: methods built once, by (method names, checkpoint)


def log_to_stderr(text: str) -> None:
  """Progress lines go to stderr (stdout holds the JSON lines)."""
  print(text, file=sys.stderr, flush=True)


def limit_worker_threads() -> None:
  """Worker initializer (before JAX starts its backend): XLA's multi-threaded Eigen CPU kernels off, so the
  workers share the cores, and no preallocation of accelerator memory, so they share one GPU."""
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"


def json_line(row: dict) -> str:
  """`row` as one line of strict JSON (keys sorted): a rate with no denominator (recall on a world with nothing
  planted) is `null`, not Python's `NaN`, which strict readers (jq, JavaScript) refuse; `summary.run_frame` reads
  either as NaN."""
  return json.dumps(_finite(row), sort_keys=True, allow_nan=False)


def undefined(value) -> bool:
  """A rate with no denominator as a row holds it: null (`json_line`) or, in rows written before 2026-12-06, NaN."""
  return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_finite(v) for v in value]
  return value


def append_row(path: str, row: dict) -> None:
  """One short append per row: whole lines from concurrent workers."""
  with open(path, "a") as handle:
    handle.write(json_line(row) + "\n")


def read_rows(path: str | None) -> list[dict]:
  """JSON lines of an earlier (maybe interrupted) run of the command; [] when there is none."""
  if not path or not os.path.exists(path):
    return []
  with open(path) as handle:
    return [json.loads(line) for line in handle if line.strip()]


def case_in_worker(
  scenario: str,
  index: int,
  suite: Suite,
  skip: frozenset,
  deadline: float | None = None,
  spill: str | None = None,
) -> tuple[bool, list[dict]]:
  """(started, rows) of `run_case` in a worker process; (False, []) once `deadline` has passed."""
  if deadline is not None and time.time() >= deadline:
    return False, []
  key = (suite.methods, suite.method_options, suite.checkpoint)
  if key not in _WORKER_METHODS:
    _WORKER_METHODS[key] = build_methods(suite.methods, suite.checkpoint, suite.method_options)
  rows = []
  try:
    for row in run_case(make_case(scenario, index, suite), suite, _WORKER_METHODS[key], log=log_to_stderr, skip=skip):
      rows.append(row)
      if spill:
        append_row(spill, row)
  finally:
    # each world has its own shapes, so its compiled programs serve no other: freed here, or a worker's
    # executables pile up until LLVM cannot map memory for the next one (a standard run died so at its 25th world).
    # (ProcessPoolExecutor's max_tasks_per_child would replace workers instead, but on Python 3.11 the pool hung
    # once a worker retired.)
    jax.clear_caches()
  return True, rows


def run_suite(
  suite: Suite,
  methods: dict[str, SuiteMethod] | None,
  *,
  log: Callable[[str], None] = print,
  skip: frozenset | set = frozenset(),
  workers: int = 1,
  deadline: float | None = None,
  spill: str | None = None,
) -> Iterator[dict]:
  """`run_case` over the suite's scenarios and seeds; `skip` holds (scenario, seed, method, budget) already run.

  With `workers` > 1 the cases run in that many spawned processes (each
  builds its own methods from `suite.methods` and `suite.checkpoint`; `methods` is
  then unused), and rows arrive case by case as they finish. `deadline` (a
  `time.time()`): no case starts after it; a started case runs to its end.
  `spill`: file the workers append each row to as they make it.
  """
  check_seed_split(suite)
  cases = case_order(suite)
  if workers <= 1:
    for scenario, i in cases:
      if deadline is not None and time.time() >= deadline:
        log(f"time limit reached: {scenario} seed index {i} and the cases after it not run")
        return
      yield from run_case(make_case(scenario, i, suite), suite, methods, log=log, skip=skip)
      compile_cache.release_if_crowded()  # the worker path's reason (case_in_worker), in the caller's own process
    return
  pool = concurrent.futures.ProcessPoolExecutor(
    workers, mp_context=multiprocessing.get_context("spawn"), initializer=limit_worker_threads
  )
  not_started = 0
  try:
    futures = [
      pool.submit(case_in_worker, scenario, i, suite, frozenset(skip), deadline, spill) for scenario, i in cases
    ]
    for future in concurrent.futures.as_completed(futures):
      started, rows = future.result()
      not_started += not started
      yield from rows
  finally:  # an error (or a closed generator) must not wait for every queued case
    pool.shutdown(wait=False, cancel_futures=True)
  if not_started:
    log(f"time limit reached: {not_started} of {len(cases)} cases not started")
