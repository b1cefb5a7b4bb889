"""Issue 17's cost counters (rows scanned, by hand with pandas), the time limit, and `auto`'s choice."""

import math
import time
import types

import numpy as np
import pytest

import cube_env
from cube_env.discovery import auto as auto_lib
from cube_env.discovery import methods as methods_lib
from cube_env.discovery import space as space_lib
from tests.conftest import SMALL_SCHEMA

Z = 4.0


@pytest.fixture(scope="module")
def space(small_cube):
  return cube_env.make_space(small_cube, max_depth=2, z_screen=Z)


def _rows(df, filters: dict) -> int:
  """Rows of a cohort by hand (labels of the cube's coding; bmi is binned, so only raw-valued columns here)."""
  keep = np.ones(len(df), bool)
  for col, val in filters.items():
    keep &= (df[col].isna() if val == cube_env.MISSING else df[col] == val).to_numpy()
  return int(keep.sum())


def _scan_by_hand(df, filters: dict) -> int:
  """rows(c) + rows(c without a) for each filter a of c (space_lib's docstring)."""
  return _rows(df, filters) + sum(_rows(df, {k: v for k, v in filters.items() if k != a}) for a in filters)


def test_rows_scanned_by_a_walk_counted_by_hand(small_df, small_cube, space):
  meta = small_cube.meta
  c = space.env.shape.num_values
  ledger = cube_env.Ledger(space, 10)
  _, state, _ = ledger.root()
  expected = len(small_df)  # the root: one pass over every row
  walked = {}
  for col, label in [("proc", "B"), ("site", "s2"), ("proc", "C")]:  # add, add, change a value
    f = meta.column_index(col)
    _, state, _ = ledger.step(state, f * (c + 1) + meta.categories[f].index(label))
    walked[col] = label
    expected += _scan_by_hand(small_df, walked)
  assert codes_of(small_cube, state) == {"proc": "C", "site": "s2"}
  assert ledger.used == 4 and ledger.rows_scanned == expected


def codes_of(cube, state) -> dict:
  return cube_env.codes_to_filters(cube.meta, np.asarray(state.filters)[: len(cube.meta.filter_names)])


def test_rows_scanned_read_off_a_longer_run(space):
  greedy = cube_env.get_method("greedy")
  anytime = cube_env.Anytime([3])
  long = greedy(space, budget=6, seed=0, progress=anytime)
  short = greedy(space, budget=3, seed=0)
  assert anytime.results(long)[3].rows_scanned == short.rows_scanned > 0
  assert long.rows_scanned > short.rows_scanned


def test_enumeration_scans_every_row_once_per_column_subset(small_cube, space):
  result = cube_env.get_method("exhaustive")(space, budget=10**6, seed=0)
  num_f = len(small_cube.meta.filter_names)
  passes = sum(math.comb(num_f, k) for k in range(3))
  assert result.rows_scanned == passes * small_cube.meta.n_rows
  assert (
    result.queries
    == sum(cube_env.count_cohorts(space))
    == len(space_lib.visitable_cohorts(space, 2)) + sum(len(space_lib.visitable_cohorts(space, d)) for d in (0, 1))
  )


def test_count_cohorts_bound_and_rows_of_a_cohort(small_df, small_cube, space):
  assert sum(cube_env.count_cohorts(space)) <= cube_env.cohort_bound(space)
  counter = space_lib.RowCounter(small_cube)
  codes = cube_env.filters_to_codes(small_cube.meta, {"proc": "A", "sex": "F"})
  assert counter.rows_of(codes) == _rows(small_df, {"proc": "A", "sex": "F"})


def test_cohort_counts_by_dense_and_sparse_keys_agree(space, monkeypatch):
  dense = [len(space_lib.visitable_cohorts(space, d)) for d in range(3)]
  assert cube_env.count_cohorts(space) == dense and dense[2] > 0
  monkeypatch.setattr(space_lib, "DENSE_KEYS_PER_CELL", 0)
  monkeypatch.setattr(space_lib, "DENSE_KEYS_MIN", 0)  # every subset's keys through np.unique
  assert cube_env.count_cohorts(space) == dense


def test_a_search_that_ran_out_of_cohorts_as_its_time_limit_passed_says_nothing_was_left(space, monkeypatch):
  """uct and frontier read the time left before they learned that nothing was left, so a limit that passed during
  the last query was named (`stopped_by` "time limit"; a review). A clock that passes the limit on the last query."""
  now = [0.0]
  monkeypatch.setattr(space_lib, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  for name in ("uct", "frontier"):
    method = cube_env.get_method(name)
    total = method(space, budget=10**6, seed=0).queries

    def tick(used, total=total):
      if used == total:  # the last query ends past the limit
        now[0] += 100.0

    result = method(space, budget=10**6, seed=0, progress=cube_env.TimeLimit(10.0, tick))
    assert result.queries == total and result.stopped_by == cube_env.STOPPED_DONE, name
    early = method(space, budget=10**6, seed=0, progress=cube_env.TimeLimit(10.0, lambda used: tick(used, 5)))
    assert early.queries == 5 and early.stopped_by == cube_env.STOPPED_TIME, name


def test_time_limit_stops_a_walker_after_the_root(space):
  result = cube_env.get_method("greedy")(space, budget=500, seed=0, progress=cube_env.TimeLimit(1e-9))
  assert result.queries == 1  # the root is always observed
  with pytest.raises(ValueError, match="time limit"):
    cube_env.TimeLimit(0)
  assert result.stopped_by == cube_env.STOPPED_TIME


def test_a_result_says_why_its_search_stopped(space):
  """The report could say only "at its time limit, or with no cohort left to visit" (an audit): the ledger knows which."""
  total = sum(cube_env.count_cohorts(space))
  greedy = cube_env.get_method("greedy")
  assert greedy(space, budget=5, seed=0).stopped_by == cube_env.STOPPED_BUDGET
  assert greedy(space, budget=5, seed=0, progress=cube_env.TimeLimit(3600.0)).stopped_by == cube_env.STOPPED_BUDGET
  beam = cube_env.get_method("beam")(space, budget=10 * total, seed=0, progress=cube_env.TimeLimit(3600.0))
  assert beam.queries < 10 * total and beam.stopped_by == cube_env.STOPPED_DONE
  # Greedy stops once every cohort it can reach is visited (a cold audit: it spent the rest of the budget on known
  # cohorts, "stopped by the budget").
  done = greedy(space, budget=10 * total, seed=0)
  assert done.stopped_by == cube_env.STOPPED_DONE and total <= done.queries < 10 * total
  assert len(done.visits) == total  # one row per distinct cohort reached: every one
  enum = cube_env.get_method("exhaustive")
  assert enum(space, budget=total + 5, seed=0).stopped_by == cube_env.STOPPED_DONE
  assert enum(space, budget=total, seed=0).stopped_by == cube_env.STOPPED_BUDGET
  short = enum(space, budget=total - 1, seed=0)  # depth 1 only: the next depth would not fit
  assert short.queries < total - 1 and short.stopped_by == cube_env.STOPPED_BUDGET
  timed = cube_env.get_method("auto")(space, budget=total, seed=3, progress=cube_env.TimeLimit(1e-9))
  assert timed.queries < total and timed.stopped_by == cube_env.STOPPED_TIME
  anytime = cube_env.Anytime([2, 10 * total])
  final = cube_env.get_method("beam")(space, budget=10 * total, seed=0, progress=anytime)
  read = anytime.results(final)
  assert read[2].stopped_by == cube_env.STOPPED_BUDGET and read[10 * total].stopped_by == cube_env.STOPPED_DONE


def test_auto_enumerates_a_space_that_fits_and_searches_one_that_does_not(space):
  total = sum(cube_env.count_cohorts(space))
  fits = cube_env.get_method("auto")(space, budget=total, seed=3)
  enum = cube_env.get_method("exhaustive")(space, budget=total, seed=3)
  assert fits.note.startswith("auto chose exhaustive") and fits.method == "auto"
  assert fits.queries == enum.queries == total
  assert fits.candidates[["cohort", "protected", "group", "measure", "z"]].equals(
    enum.candidates[["cohort", "protected", "group", "measure", "z"]]
  )
  small = cube_env.get_method("auto")(space, budget=total // 10, seed=3)
  walk = cube_env.get_method(auto_lib.FALLBACK)(space, budget=total // 10, seed=3)
  over = auto_lib.plan(space, budget=total // 10)
  assert over.cohorts > total // 10 and not over.exact  # counting stopped once past the budget
  assert small.note.startswith(f"auto chose {auto_lib.FALLBACK}: enumeration needs more than {over.cohorts:,}")
  assert auto_lib.plan(space, budget=total - 1).cohorts == total  # past the budget only at the deepest level
  assert small.queries == walk.queries and list(small.visits["cohort"]) == list(walk.visits["cohort"])


def test_auto_under_a_time_limit_probes_and_falls_back(space, monkeypatch):
  total = sum(cube_env.count_cohorts(space))
  # One subset timed of several is mostly compilation: no estimate is given (a cold audit: it was times the count of
  # subsets, some hundred times too high).
  plan = auto_lib.plan(space, budget=10 * total, time_left=1e-6)
  assert plan.method == auto_lib.FALLBACK and plan.probe_queries > 0 and plan.estimated_seconds is None
  assert "enumeration's time not estimated: the time probe's first column subset" in plan.reason
  with monkeypatch.context() as patch:  # two subsets timed, and an estimate over what is left (a huge margin)
    patch.setattr(auto_lib, "TIME_MARGIN", 1e12)
    over = auto_lib.plan(space, budget=10 * total, time_left=3600.0)
  assert over.method == auto_lib.FALLBACK and len(over.probed) == 2 and over.estimated_seconds > 0
  assert "enumeration estimated at" in over.reason and "exceeds" in over.reason
  roomy = auto_lib.plan(space, budget=10 * total, time_left=3600.0)
  assert roomy.method == "exhaustive" and "fits" in roomy.reason


def test_auto_under_a_time_limit_reuses_its_probe_and_stops_it_early(space):
  """An audit: with a time limit and a budget that fits enumeration, auto ran the fallback on a negative budget (the
  probe drew one subset five times and was charged on top), a roomy limit searched less than none, and a 0.001 s
  limit probed every subset."""
  total = sum(cube_env.count_cohorts(space))
  enum = cube_env.get_method("exhaustive")(space, budget=total, seed=3)
  for budget in (total, total + 3):
    timed = cube_env.get_method("auto")(space, budget=budget, seed=3, progress=cube_env.TimeLimit(3600.0))
    assert timed.note.startswith("auto chose exhaustive") and "(enumeration reuses them)" in timed.note
    assert timed.queries == total and timed.candidates[["cohort", "group", "measure", "z"]].equals(
      enum.candidates[["cohort", "group", "measure", "z"]]
    )
  # Distinct subsets: every one of the deepest level (C(6, 2) = 15) when more are asked for, each once.
  probe = auto_lib.enumeration_seconds(space, probe=50)
  assert len(probe.found) == 15 and probe.queries == sum(n for n, _ in probe.found.values())
  assert probe.queries < total  # the deepest level's cohorts only
  # A limit the first subset outruns: one subset timed, and the fallback charged its cohorts.
  quick = auto_lib.plan(space, budget=total, time_left=1e-9)
  assert len(quick.probed) == 1 and quick.method == auto_lib.FALLBACK and "not estimated" in quick.reason
  run = cube_env.get_method("auto")(space, budget=total, seed=3, progress=cube_env.TimeLimit(1e-9))
  assert run.queries <= total and "counted as queries" in run.note


def test_auto_uses_the_bound_when_counting_would_be_slow(space, monkeypatch):
  monkeypatch.setattr(auto_lib, "EXACT_COUNT_SUBSETS", 0)
  bound = cube_env.cohort_bound(space)
  plan = auto_lib.plan(space, budget=bound - 1)
  assert not plan.exact and plan.cohorts == bound and plan.method == auto_lib.FALLBACK
  assert "upper bound" in plan.reason
  assert SMALL_SCHEMA.dimensions  # the fixture's schema


def test_a_time_limit_around_an_anytime_progress_binds_both(space):
  anytime = cube_env.Anytime([2])
  result = cube_env.get_method("greedy")(space, budget=4, seed=0, progress=cube_env.TimeLimit(3600.0, anytime))
  assert result.queries == 4 and anytime.results(result)[2].queries == 2


def test_auto_sets_what_enumeration_still_takes_against_the_time_left(space, monkeypatch):
  """A review: the whole estimate (compilation and the probed subsets, which enumeration reuses) was set against the
  time left after the probe. A clock that the probe's subsets move by 2 s, then 0.1 s each: of the 22 subsets, 17
  are left, 1.7 s (2.55 s with the margin)."""
  clock, real = {"t": 0.0, "calls": 0}, auto_lib.oracle.subset_findings

  def timed(*args, **kwargs):
    clock["calls"] += 1
    clock["t"] += 2.0 if clock["calls"] == 1 else 0.1
    return real(*args, **kwargs)

  monkeypatch.setattr(auto_lib.oracle, "subset_findings", timed)
  monkeypatch.setattr(auto_lib.time, "perf_counter", lambda: clock["t"])
  assert auto_lib.column_subsets(space) == 22
  total = sum(cube_env.count_cohorts(space))
  roomy = auto_lib.plan(space, budget=total, time_left=7.0)  # 4.6 s left after the probe's 2.4 s
  assert roomy.method == "exhaustive" and roomy.estimated_seconds == pytest.approx(1.9 + 0.1 * 22)
  assert "1.7 s of it after a time probe" in roomy.reason and "fits the 4.6 s left" in roomy.reason
  clock["calls"] = 0  # the first subset compiles again
  tight = auto_lib.plan(space, budget=total, time_left=4.0)  # 1.9 s left after two subsets, under 2.0 x 1.5
  assert tight.method == auto_lib.FALLBACK and len(tight.probed) == 2 and "exceeds the 1.9 s left" in tight.reason


def test_enumeration_auto_picks_stops_at_its_deadline_between_column_subsets(space, monkeypatch):
  """An audit: the probe's estimate swings twofold, and the enumeration it picked could not stop (a run ended past
  its limit). Past the deadline no column subset is begun but the root's, and the probe's subsets are kept."""
  total = sum(cube_env.count_cohorts(space))
  full = cube_env.get_method("exhaustive")(space, budget=total, seed=0)
  late = methods_lib.enumerate_space(space, budget=total, deadline=time.perf_counter())
  assert late.queries == 1 and len(late.visits) == 1 and late.stopped_by == cube_env.STOPPED_TIME
  subsets = space_lib.column_subsets(space)
  assert late.note == f"stopped at its time limit after 1 of {subsets} column subsets (1 cohort)"
  assert late.rows_scanned == full.rows_scanned // subsets
  probe = auto_lib.enumeration_seconds(space, probe=3)
  part = methods_lib.enumerate_space(space, budget=total, done=probe.found, deadline=time.perf_counter())
  assert part.queries == 1 + probe.queries == len(part.visits) and part.stopped_by == cube_env.STOPPED_TIME
  keys = ["cohort", "protected", "group", "measure"]
  assert len(part.candidates) and part.candidates[keys + ["z"]].equals(
    full.candidates[full.candidates["cohort"].isin(set(part.visits["cohort"]))][keys + ["z"]].reset_index(drop=True)
  )
  # auto, having chosen enumeration, gets the deadline of its time limit.
  roomy = auto_lib.plan(space, budget=total, time_left=3600.0)
  monkeypatch.setattr(auto_lib, "plan", lambda *_, **__: roomy)
  timed = cube_env.get_method("auto")(space, budget=total, seed=0, progress=cube_env.TimeLimit(1e-9))
  assert timed.note.startswith("auto chose exhaustive") and "stopped at its time limit after" in timed.note
  assert timed.queries < total and timed.stopped_by == cube_env.STOPPED_TIME
