"""One call of the `quality` command: resume from OUT, run the suite, write rows, summaries, tables and plot.

Run rows already in `out` (same suite and sizes) are kept and their
(scenario, seed, method, budget) skipped, so an interrupted suite continues
and methods can be added later; so are the rows a killed call's workers
spilled to OUT.partial. `out` is then rewritten as every run row, one
`invocation` row per call (wall time, load) and fresh summary rows, after
the rows of other suites or splits (and any other line) it held, unchanged:
whole or not at all (a temporary file renamed over it), since it holds every
earlier call's rows. See docs/design.md, Discovery and confirmation.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable
from importlib import metadata

import jax

from cube_env import worlds
from cube_env.discovery.journal import fsync_dir, write_atomic
from experiments.launch.errors import UsageError
from experiments.quality.plot import plot, worlds_label
from experiments.quality.pool import json_line, log_to_stderr, read_rows, run_suite
from experiments.quality.runner import check_methods
from experiments.quality.suite import SUITES, Suite, case_order, check_request, resize
from experiments.quality.summary import best_settings, suite_pairs, summarize
from experiments.quality.tables import headline_tables

Emit = Callable[[Iterable[dict], str | None], list[dict]]  # prints rows (and appends them to the file) as they come


def _same_suite(suite: Suite) -> Callable[[dict], bool]:
  """Whether a stored row belongs to `suite` at its current sizes, budgets and method settings (a suite's may change
  between versions: a run row of a method run with other settings, at a budget the suite no longer has, or without
  its settings recorded, is dropped and run again)."""

  tuned = suite.method_options_row()

  def budget_kept(r: dict) -> bool:
    if r.get("budget_kind") == "fixed":
      return r.get("budget") in suite.fixed_budgets
    fraction = r.get("nominal_fraction")
    return fraction is not None and any(abs(fraction - f) < 1e-9 for f in suite.fractions_for(r["method"]))

  def same(r: dict) -> bool:
    if not (
      r.get("suite") == suite.name
      and r.get("kind") in ("run", "invocation")
      and r.get("n_rows") == suite.n_rows
      and r.get("split", "eval") == suite.split
    ):
      return False
    if r.get("worlds_version") != worlds.VERSION:  # rows, and calls, of other worlds (calls before version 3
      return False  # did not record it: their runs are dropped with them, so their wall time is too)
    if r["kind"] == "invocation":  # its wall time counts in the suite's only if it ran the same settings
      return r.get("method_options") == tuned
    return r.get("options") == suite.options_row(r["method"]) and budget_kept(r)

  return same


VERSIONED = ("numpy", "pandas", "scipy", "jax", "jaxlib", "flax", "optax", "mctx")


def host_versions() -> dict:
  """The Python, package versions and CPU features a call ran with (an invocation row's `versions`): the worlds'
  draw and every figure can depend on them (benchmarks/README.md, *The same seed, another table*)."""
  out = {"python": platform.python_version(), "machine": platform.machine()}
  for name in VERSIONED:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  try:
    with open("/proc/cpuinfo") as handle:
      flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    out["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4")))
  except OSError:  # not Linux: the versions alone
    out["cpu_flags"] = None
  return out


def worlds_differ(runs: Iterable[dict]) -> list[list]:
  """[family, seed] of every world whose run rows record more than one table (`world_sha256`; rows from before it
  was recorded are not compared)."""
  seen: dict[tuple, set] = {}
  for r in runs:
    if r.get("world_sha256"):
      seen.setdefault((r["scenario"], r["seed"]), set()).add(r["world_sha256"])
  return [list(key) for key, ids in sorted(seen.items()) if len(ids) > 1]


UNSCORED = "before_other_side"  # what `scoring_rules` calls the rule of run rows that record none (they predate it)


def scoring_rules(runs: Iterable[dict]) -> list[str]:
  """The scoring rules the run rows were scored by (`scoring`; `UNSCORED` for rows from before it was recorded),
  sorted: more than one means recall is compared across rules (`benchmarks/rescore.py` scores kept findings again
  under either, and lists the plants where the rules can differ)."""
  return sorted({r.get("scoring") or UNSCORED for r in runs})


def other_rows(suite: Suite, out: str) -> list[dict]:
  """The rows of `out` that are not `suite`'s (another suite or split, or no suite at all), kept as they are."""
  return [r for r in read_rows(out) if not (r.get("suite") == suite.name and r.get("split", "eval") == suite.split)]


def earlier_rows(suite: Suite, out: str | None, spill: str | None, log: Callable[[str], None]) -> list[dict]:
  """Run and invocation rows of `suite` in `out`, plus the run rows a killed call's workers left in `spill`."""
  same = _same_suite(suite)
  earlier = [r for r in read_rows(out) if same(r)]
  done = {(r["scenario"], r["seed"], r["method"], r["budget"]) for r in earlier if r["kind"] == "run"}
  kept = 0
  for r in read_rows(spill):  # rows the workers of a killed call made (its parent never wrote them to `out`)
    k = (r.get("scenario"), r.get("seed"), r.get("method"), r.get("budget"))
    if same(r) and r["kind"] == "run" and k not in done:
      earlier.append(r)
      done.add(k)
      kept += 1
  if kept:
    log(f"kept {kept} rows that the workers of an interrupted call wrote to {spill}")
  return earlier


def run_quality(
  suite_name: str,
  *,
  checkpoint: str | None,
  method_names: tuple[str, ...] | None,
  plot_path: str | None,
  out: str | None,
  emit: Emit,
  log: Callable[[str], None] | None = None,
  scenarios: tuple[str, ...] | None = None,
  workers: int | None = None,
  seeds: int | None = None,
  time_limit_s: float | None = None,
  split: str | None = None,
  sweep: bool = False,
) -> list[dict]:
  """The `quality` command: run rows, then summary rows, the headline tables and the plot.

  `workers` (default: the CPU count, capped at 2, on a CPU backend; 1 on an
  accelerator, whose memory one process holds unless
  XLA_PYTHON_CLIENT_PREALLOCATE=false) is the number of cases run at once.
  `seeds` overrides the suite's number of cubes per scenario. `time_limit_s`:
  no case starts after this many seconds (cases go seed by seed across
  scenarios, so a cut suite still covers each one); the invocation row
  records how many cases ran. A bad request (a flag's value, a method's
  settings, an agent that does not load) raises `UsageError` naming the flag
  before any world is drawn.
  """
  try:
    check_request(
      method_names,
      scenarios,
      workers,
      seeds,
      time_limit_s,
      suite=suite_name,
      split=split,
      checkpoint=checkpoint,
      sweep=sweep,
    )
    suite = resize(
      SUITES[suite_name],
      method_names=method_names,
      scenarios=scenarios,
      seeds=seeds,
      split=split,
      sweep=sweep,
      checkpoint=checkpoint,
    )
    built = check_methods(suite)
  except ValueError as err:
    raise UsageError(str(err)) from None
  log = log or log_to_stderr
  spill = f"{out}.partial" if out else None
  earlier = earlier_rows(suite, out, spill, log)
  done = {(r["scenario"], r["seed"], r["method"], r["budget"]) for r in earlier if r["kind"] == "run"}
  device = jax.devices()[0]
  if workers is None:
    workers = min(2, os.cpu_count() or 1) if device.platform == "cpu" else 1
  methods = built if workers == 1 else None  # workers build their own
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  deadline = None if time_limit_s is None else time.time() + time_limit_s
  rows = emit(
    run_suite(suite, methods, log=log, skip=done, workers=workers, deadline=deadline, spill=spill),
    out,
  )
  invocation = dict(
    kind="invocation",
    suite=suite.name,
    methods=list(suite.methods),
    wall_s=time.perf_counter() - t0,
    workers=workers,
    seeds=suite.seeds,
    n_rows=suite.n_rows,
    split=suite.split,
    worlds_version=worlds.VERSION,
    method_options=suite.method_options_row(),
    scenarios=list(suite.scenarios),
    cases_run=len({(r["scenario"], r["seed"]) for r in rows}),
    cases_in_suite=len(case_order(suite)),
    time_limit_s=time_limit_s,
    device=device.device_kind,
    platform=device.platform,
    cpu_count=os.cpu_count(),
    load_average_before=load_before,
    load_average_after=os.getloadavg(),
    checkpoint=checkpoint,
    versions=host_versions(),
  )
  runs = [r for r in earlier if r["kind"] == "run"] + rows
  invocation["worlds_differ"] = worlds_differ(runs)
  if invocation["worlds_differ"]:
    log(
      f"warning: {out} holds rows of two different tables for one world seed ({invocation['worlds_differ']}): "
      "their worlds were drawn on machines that draw them differently; compare only rows of one table"
    )
  invocation["scoring_rules"] = scoring_rules(runs)
  if len(invocation["scoring_rules"]) > 1:
    log(
      f"warning: {out} holds run rows scored by different rules ({', '.join(invocation['scoring_rules'])}): "
      "recall compares across them only where the rules agree (benchmarks/rescore.py)"
    )
  invocations = [r for r in earlier if r["kind"] == "invocation"] + [invocation]
  summary = summarize(runs, split=suite.split)
  pairs = suite_pairs(runs, split=suite.split)  # with issue 18's yardstick: learned searches vs the best heuristic
  if sweep:  # the settings each swept method would take (suite.TUNED is set from these by hand, and committed)
    pairs = pairs + best_settings(runs, split=suite.split)
  if out:
    others = other_rows(suite, out)  # an audit: a call with another suite or split wiped them
    text = "".join(json_line(r) + "\n" for r in others + runs + invocations + summary + pairs)
    # Renamed over `out` once whole: rewritten in place, a SIGTERM during the write left it empty or cut (an audit).
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    write_atomic(out, text.encode())
    fsync_dir(os.path.dirname(out) or ".")
    if os.path.exists(spill):  # every row in it is in `out` now
      os.remove(spill)
  for r in [invocation] + summary + pairs:  # the machine, as the other commands print it, then the summaries
    print(json_line(r), flush=True)
  if not any(r["applicable"] for r in summary):
    log(f"no applicable run to summarize in suite {suite.name} ({len(runs)} rows)")
    return runs + invocations + summary + pairs
  wall = sum(r["wall_s"] for r in invocations)
  log(
    headline_tables(
      summary,
      suite_name=suite.name,
      wall_s=wall,
      calls=len(invocations),
      device_kind=device.device_kind,
      pairs=pairs,
    )
  )
  path = plot_path or os.path.join(os.path.dirname(out) if out else "runs", "recall_vs_budget.png")  # runs/: ignored
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  plot(
    summary,
    path,
    title=f"suite {suite.name} on {device.device_kind} ({os.cpu_count()} cores); {worlds_label(summary)}",
  )
  log(f"plot: {path}")
  return runs + invocations + summary + pairs
