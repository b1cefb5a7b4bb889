"""What users feel: seconds per query of a whole search, on an analyst's table and on a wide one.

The env figures (`experiments.speed.env_speed`) time one jitted step on random
cells. A user waits for more: ingest, the space (cell index and root grid),
the compilation, and a method's every query through the `Ledger` (the step,
the transfer of its observation and the method's Python between steps), plus
the candidates' statistics at the end. docs/design.md, Benchmarks and honesty:
queries and wall seconds are reported in the same run, and compile time apart.

* `table_rows`: the synthetic generator's table as an analyst would cut it
  (`TABLE_DIMENSIONS` + `TABLE_PROTECTED` as filters, `TABLE_MEASURES`), 60,000
  rows. `greedy` at a fixed budget on the default env (`groupby="index"`) and,
  with `reference`, on today's env (`reference_space`: the dense `segment`
  group-by with the whole batch in one chunk); both must make the same search
  (`visits_digest`). `exhaustive` runs its own oracle, not the env step, so it
  is timed once. A summary row gives the ratio of the two envs' milliseconds per
  query and what greedy at 5% of the cohort count would cost next to
  `exhaustive`.
* `wide_rows`: a random table of 1,000,000 rows and 40 filter columns
  (`wide_table`), new env only: generation, ingest, space, compile, a short
  greedy run and single steps at depth 1 and 2 (the largest cohorts, the index's
  worst case). The dense step is not run; XLA's memory analysis of it is
  reported instead. Each stage that fails (e.g. out of memory) gives an error
  row and the function goes on where it can.

Every row is a JSON-ready dict with a "bench" key, tagged with the device and
the process's peak resident memory so far.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import cube_env
from cube_env import synthetic
from experiments.speed import env_speed

TABLE_DIMENSIONS = ("procedure", "service_line", "site", "surgeon", "asa_class", "urgency", "anesthesia_type")
TABLE_PROTECTED = ("race", "ethnicity", "sex", "age_group", "payer")
TABLE_MEASURES = ("case_minutes", "length_of_stay", "opioid_mme", "complication", "readmit_30d")  # 3 log, 2 binary
TABLE_SCENARIO = "mixed"
WARM_BUDGET = 2  # queries of the run that compiles the step (its first query is reported as compile_s)
SHARE_OF_COHORTS = 0.05  # greedy at this share of the cohort count, against exhaustive (summary row)


def _device() -> dict:
  """The device, and the host's 1-minute load average when the function started (other work slows a CPU run)."""
  device = jax.devices()[0]
  return dict(device=device.device_kind, platform=device.platform, load_average=os.getloadavg()[0])


def _peak_rss_gib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _available_gib() -> float | None:
  """MemAvailable of /proc/meminfo (None where there is none)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return None


def _error(err: BaseException) -> str:
  lines = str(err).strip().splitlines()
  return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def reference_space(space: cube_env.Space) -> cube_env.Space:
  """Today's env on the same space: the dense segment group-by, every batched env in one chunk."""
  return dataclasses.replace(space, env=env_speed.reference_env(space.env))


def visits_digest(result: cube_env.SearchResult) -> str:
  """SHA-1 of a search's visits in order (cohort, parent, new findings): equal when two searches went alike."""
  v = result.visits
  text = "\n".join(f"{c}|{p}|{n}" for c, p, n in zip(v["cohort"], v["parent"], v["n_new"]))
  return hashlib.sha1(text.encode()).hexdigest()


def timed_greedy(space: cube_env.Space, budget: int, seed: int = 0) -> tuple[dict, cube_env.SearchResult]:
  """Greedy at `budget` after a `WARM_BUDGET` run that compiles the step; (timings, result).

  `seconds` is the wall time of the call: every query, the method's Python
  between them and the result (the candidates' statistics, which rebuild the
  cube's params); `ms_per_query` divides it by the queries spent.
  `ms_between_queries` is the mean time from one query's start to the next's
  (the step, its transfer and the method's choice; no result), read from the
  ledger's progress calls; `result_s` is what the call took beyond
  `queries x ms_between_queries` (mostly the result). `compile_s` is the warm
  run's first query (the step's compilation and one step: the time from its
  start to the second query's start) and `warm_s` that run's wall time.
  """
  warm: list[float] = []
  t0 = time.perf_counter()
  cube_env.greedy(space, budget=WARM_BUDGET, seed=seed, progress=lambda _: warm.append(time.perf_counter()))
  warm_s = time.perf_counter() - t0
  starts: list[float] = []
  t0 = time.perf_counter()
  result = cube_env.greedy(space, budget=budget, seed=seed, progress=lambda _: starts.append(time.perf_counter()))
  seconds = time.perf_counter() - t0
  between = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else seconds / result.queries
  return (
    dict(
      method="greedy",
      groupby=space.env.groupby,
      budget=budget,
      queries=result.queries,
      seconds=seconds,
      ms_per_query=1e3 * seconds / result.queries,
      ms_between_queries=1e3 * between,
      result_s=max(0.0, seconds - between * result.queries),
      compile_s=warm[1] - warm[0] if len(warm) > 1 else warm_s,
      warm_s=warm_s,
      cohorts_visited=len(result.visits),
      findings=len(result.candidates),
      visits_sha1=visits_digest(result),
    ),
    result,
  )


def table_frame(rows: int, seed: int) -> tuple[pd.DataFrame, cube_env.Schema]:
  """The synthetic table restricted to the analyst's 12 filter columns and 5 measures, and its schema.

  Generator seed `cube_env.EVAL_SEED_BASE + seed` (benchmark cubes use evaluation seeds).
  """
  df, full, _ = synthetic.make_cases(TABLE_SCENARIO, cube_env.EVAL_SEED_BASE + seed, n_rows=rows, cohorts="fixed")
  schema = cube_env.Schema(
    dimensions=TABLE_DIMENSIONS,
    protected=TABLE_PROTECTED,
    measures=TABLE_MEASURES,
    log_scale={m: v for m, v in full.log_scale.items() if m in TABLE_MEASURES},
  )
  return df[list(schema.filter_columns + schema.measures)], schema


def table_rows(
  rows: int = 60_000,
  seed: int = 0,
  budget: int = 250,
  reference: bool = True,
  *,
  max_depth: int = 3,
  exhaustive: bool = True,
) -> list[dict]:
  """User-facing speed on the analyst's table: ingest, greedy per env, exhaustive, summary.

  Args:
    rows: rows of the synthetic table.
    seed: table seed (offset from `cube_env.EVAL_SEED_BASE`); also greedy's seed.
    budget: greedy's queries (the root included).
    reference: also run greedy on today's env (`reference_space`: 130-190 ms
      per query at 60,000 rows on a loaded 2-core CPU, against 6-7 ms).
    max_depth: the space's depth (exhaustive enumerates every cohort to it).
    exhaustive: time `exhaustive` and count the cohorts (the summary's 5% figure needs them).

  Returns:
    rows with bench "user_table": method "ingest", "greedy" (one per env),
    "exhaustive", "summary".
  """
  df, schema = table_frame(rows, seed)
  common = dict(bench="user_table", rows=int(len(df)), columns=len(schema.filter_columns), **_device())
  t0 = time.perf_counter()
  cube = cube_env.build_cube(df, schema)
  ingest_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  space = cube_env.make_space(cube, max_depth=max_depth)
  space_s = time.perf_counter() - t0
  meta = cube.meta
  common["cells"] = int(cube.num_cells)
  out = [
    dict(
      common,
      method="ingest",
      groupby=None,
      queries=0,
      seconds=ingest_s,
      ms_per_query=None,
      space_s=space_s,
      filter_columns=list(meta.filter_names),
      categories=[len(c) for c in meta.categories],
      measures=list(meta.measure_names),
      binary_measures=[m for m, b in zip(meta.measure_names, meta.is_binary) if b],
      log_measures=[m for m, lg in zip(meta.measure_names, meta.is_log) if lg],
      max_depth=max_depth,
      z_screen=space.z_screen,
      new_z=space.new_z,  # make_space's defaults (Bonferroni z, newness at it), not a discovery run's 3.5 / 2.5
      peak_rss_gib=_peak_rss_gib(),
      note="seconds: build_cube; space_s: make_space (params: cell index and root grid; the empty-space check)",
    )
  ]
  greedy = {}
  for sp in (space, reference_space(space)) if reference else (space,):
    timing, _ = timed_greedy(sp, budget, seed)
    greedy[sp.env.groupby] = timing
    note = "today's env: dense segment group-by, batch_chunk 2**30" if sp is not space else "default env"
    out.append(dict(common, **timing, peak_rss_gib=_peak_rss_gib(), note=note))

  cohorts = exhaustive_s = None
  if exhaustive:
    t0 = time.perf_counter()
    per_depth = cube_env.count_cohorts(space)
    count_s = time.perf_counter() - t0
    cohorts = int(sum(per_depth))
    t0 = time.perf_counter()
    result = cube_env.exhaustive(space, budget=cohorts, seed=seed)
    exhaustive_s = time.perf_counter() - t0
    out.append(
      dict(
        common,
        method="exhaustive",
        groupby=None,
        queries=result.queries,
        seconds=exhaustive_s,
        ms_per_query=1e3 * exhaustive_s / result.queries,
        cohorts=cohorts,
        cohorts_per_depth=per_depth,
        count_s=count_s,
        findings=len(result.candidates),
        peak_rss_gib=_peak_rss_gib(),
        note=(
          "its own oracle (segment sums per column subset), not the env step: timed once, "
          "first call (its compilation included); queries = cohorts visited; count_s: count_cohorts"
        ),
      )
    )

  summary = dict(common, method="summary", groupby=None, budget=budget)
  new = greedy["index"]
  if "segment" in greedy:
    old = greedy["segment"]
    summary.update(
      today_over_new_ms_per_query=old["ms_per_query"] / new["ms_per_query"],
      today_over_new_ms_between_queries=old["ms_between_queries"] / new["ms_between_queries"],
      same_search=old["visits_sha1"] == new["visits_sha1"],
    )
  if cohorts is not None:
    share = max(1, math.ceil(SHARE_OF_COHORTS * cohorts))
    summary.update(cohorts=cohorts, share_of_cohorts=SHARE_OF_COHORTS, share_queries=share)
    for name, timing in greedy.items():
      estimate = share * timing["ms_between_queries"] / 1e3 + timing["result_s"]
      summary[f"greedy_share_s_{name}"] = estimate
      summary[f"greedy_share_over_exhaustive_{name}"] = estimate / exhaustive_s
    summary["note"] = (
      f"greedy_share_s_*: an estimate, not a run: {SHARE_OF_COHORTS:g} x cohorts queries x ms_between_queries "
      "+ result_s of the greedy row; over_exhaustive: that over exhaustive's wall seconds"
    )
  out.append(summary)
  return out


def wide_cardinalities(dimensions: int, protected: int) -> tuple[list[int], list[int]]:
  """Categories per column: dimensions spread evenly over 2-30, protected columns over 2-6."""
  dims = np.round(np.linspace(2, 30, dimensions)).astype(int).tolist() if dimensions else []
  prot = np.round(np.linspace(2, 6, protected)).astype(int).tolist() if protected else []
  return dims, prot


def wide_table(rows: int = 1_000_000, columns: int = 40, seed: int = 0, protected: int = 5):
  """A random wide table (a benchmark input): `columns - protected` dimensions, `protected` groups, 4 measures.

  Category frequencies are skewed (Zipf: the i-th value's share is proportional to 1 / i), labels are
  strings (so ingest keeps them as categories, not quantile bins). Measures:
  log-normal minutes with a small effect of the first dimension (log scale),
  gamma length of stay with 5% missing, a binary complication (about 8%) and a
  normal cost. Deterministic in (rows, columns, seed, protected).

  Returns:
    (frame, schema, max_categories to pass to `build_cube` so no column is folded).
  """
  if not 0 < protected < columns:
    raise ValueError(f"need 0 < protected < columns, got protected={protected}, columns={columns}")
  rng = np.random.default_rng([seed, rows, columns, protected])
  dims, prot = wide_cardinalities(columns - protected, protected)
  names = [f"d{i:02d}" for i in range(len(dims))] + [f"p{i}" for i in range(len(prot))]
  data, codes0 = {}, None
  for name, k in zip(names, dims + prot):
    shares = 1.0 / np.arange(1, k + 1)
    codes = rng.choice(k, size=rows, p=shares / shares.sum())
    codes0 = codes if codes0 is None else codes0
    data[name] = pd.Categorical.from_codes(codes, [f"{name}_{v:02d}" for v in range(k)])
  minutes = rng.lognormal(4.0 + 0.05 * codes0, 0.4)
  los = rng.gamma(2.0, 1.5, rows) + 0.1
  los[rng.random(rows) < 0.05] = np.nan
  data.update(
    minutes=minutes,
    length_of_stay=los,
    complication=(rng.random(rows) < 0.08).astype(float),
    cost=rng.normal(1000.0, 200.0, rows),
  )
  schema = cube_env.Schema(
    dimensions=names[: len(dims)],
    protected=names[len(dims) :],
    measures=("minutes", "length_of_stay", "complication", "cost"),
    log_scale=dict(minutes=True),
  )
  return pd.DataFrame(data), schema, max(dims + prot)


def _largest_filter(params, filters: np.ndarray, n_cats: np.ndarray) -> tuple[int, int]:
  """(column, code) of the free column's value with the most cells (the index reads its slice)."""
  starts = np.asarray(params.starts)
  best, pick = -1, (0, 0)
  for f in np.nonzero(filters < 0)[0]:
    sizes = np.diff(starts[f, : n_cats[f] + 1])
    if sizes.max() > best:
      best, pick = int(sizes.max()), (int(f), int(np.argmax(sizes)))
  return pick


def _step_rows(space: cube_env.Space, common: dict, repeats: int) -> list[dict]:
  """Single steps through the `Ledger` into the largest one- and two-filter cohorts, `repeats` times each."""
  env, params = space.env, space.params
  n_cats = np.asarray(params.n_cats)
  ledger = cube_env.Ledger(space, 10 * (repeats + 1) * space.max_depth + 1)
  _, state, _ = ledger.root()
  out = []
  for depth in range(1, min(2, space.max_depth) + 1):
    f, v = _largest_filter(params, np.asarray(state.filters), n_cats)
    action = env.action_for(f, v)
    if not bool(np.asarray(state.mask)[action]):
      out.append(dict(common, method="step", depth=depth, error=f"largest filter (column {f}, code {v}) is illegal"))
      break
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up (the step is already compiled)
      t0 = time.perf_counter()
      _, nxt, _ = ledger.step(state, action)
      times.append(time.perf_counter() - t0)
    starts = np.asarray(params.starts)
    out.append(
      dict(
        common,
        method="step",
        groupby=env.groupby,
        depth=depth,
        queries=repeats,
        seconds=float(np.sum(times[1:])),
        ms_per_query=1e3 * float(np.median(times[1:])),
        ms_min=1e3 * float(np.min(times[1:])),
        cohort_rows=float(nxt.rows),
        filter_cells=int(starts[f, v + 1] - starts[f, v]),
        filter=[f, v],
        peak_rss_gib=_peak_rss_gib(),
        note="ms_per_query: median of repeated Ledger steps into the largest cohort of this depth "
        "(filter_cells: cells of the newest filter's value)",
      )
    )
    state = nxt
  return out


def dense_step_bytes(space: cube_env.Space) -> int:
  """Temporary bytes XLA's memory analysis gives for today's dense step on `space` (compiled, not run)."""
  env = reference_space(space).env
  state = jax.eval_shape(env.reset, jax.random.PRNGKey(0), space.params)[1]
  step = jax.jit(env.step)
  compiled = step.lower(jax.random.PRNGKey(0), state, jnp.int32(0), space.params).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def wide_rows(
  rows: int = 1_000_000,
  columns: int = 40,
  seed: int = 0,
  queries: int = 50,
  *,
  protected: int = 5,
  max_depth: int = 3,
  step_repeats: int = 3,
  dense_analysis: bool = True,
) -> list[dict]:
  """User-facing speed on a wide random table, default env only.

  Args:
    rows, columns, seed, protected: the table (`wide_table`).
    queries: greedy's budget.
    max_depth: the space's depth.
    step_repeats: timed repeats of each single step.
    dense_analysis: compile (never run) today's dense step and report XLA's temporary bytes.

  Returns:
    rows with bench "user_wide": method "generate", "ingest", "space",
    "greedy", "step" (depth 1 and 2), "dense_step"; a stage that raised gives
    a row with "error" (later stages that need it are skipped).
  """
  common = dict(bench="user_wide", rows=rows, columns=columns, protected=protected, **_device())
  out = []

  def stage(method, fn):
    t0 = time.perf_counter()
    try:
      value = fn()
    except (MemoryError, RuntimeError, ValueError) as err:  # e.g. out of memory: report it, go on
      out.append(dict(common, method=method, error=_error(err), peak_rss_gib=_peak_rss_gib()))
      return None, None
    return value, time.perf_counter() - t0

  made, gen_s = stage("generate", lambda: wide_table(rows, columns, seed, protected))
  if made is None:
    return out
  df, schema, max_categories = made
  dims, prot = wide_cardinalities(columns - protected, protected)
  out.append(
    dict(
      common,
      method="generate",
      seconds=gen_s,
      dimension_categories=dims,
      protected_categories=prot,
      measures=list(schema.measures),
      peak_rss_gib=_peak_rss_gib(),
      note="numpy draws and the pandas frame (a benchmark input, not part of what users wait for)",
    )
  )
  cube, ingest_s = stage("ingest", functools.partial(cube_env.build_cube, df, schema, max_categories=max_categories))
  del df  # the frame is not needed any more (about 0.5 GB at the defaults)
  if cube is None:
    return out
  common["cells"] = int(cube.num_cells)
  out.append(
    dict(common, method="ingest", seconds=ingest_s, max_categories=max_categories, peak_rss_gib=_peak_rss_gib())
  )
  space, space_s = stage("space", lambda: cube_env.make_space(cube, max_depth=max_depth))
  if space is None:
    return out
  _, params_s = stage(
    "params", lambda: jax.block_until_ready(cube_env.make_params(cube, space.env.shape, z_screen=space.z_screen))
  )
  params_bytes = int(sum(x.nbytes for x in jax.tree.leaves(space.params)))
  out.append(
    dict(
      common,
      method="space",
      seconds=space_s,
      params_s=params_s,
      padded_cells=space.env.shape.num_cells,
      params_bytes=params_bytes,
      z_screen=space.z_screen,
      new_z=space.new_z,  # make_space's defaults (Bonferroni z, newness at it), not a discovery run's 3.5 / 2.5
      peak_rss_gib=_peak_rss_gib(),
      note="seconds: make_space (params, then the empty-space check read off the root grid); "
      "params_s: make_params alone, timed again (padding, cell index: an argsort per column, root grid)",
    )
  )
  timed, _ = stage("greedy", lambda: timed_greedy(space, queries, seed))
  if timed is not None:
    out.append(
      dict(
        common,
        **timed[0],
        peak_rss_gib=_peak_rss_gib(),
        note="new env only (groupby index): today's dense step is not run at this size (see the dense_step row)",
      )
    )
  steps, _ = stage("step", lambda: _step_rows(space, common, step_repeats))
  out.extend(steps or [])
  if dense_analysis:
    temp, analysis_s = stage("dense_step", lambda: dense_step_bytes(space))
    if temp is not None:
      out.append(
        dict(
          common,
          method="dense_step",
          groupby="segment",
          temp_gib=temp / 2**30,
          params_gib=params_bytes / 2**30,
          available_gib=_available_gib(),
          seconds=analysis_s,
          peak_rss_gib=_peak_rss_gib(),
          note="today's dense step compiled, never run here: XLA's temporary bytes for one unbatched step "
          "(on top of the params); available_gib: this machine's MemAvailable now",
        )
      )
  return out
