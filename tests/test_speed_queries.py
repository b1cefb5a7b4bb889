"""User-facing speed rows (experiments.speed.queries) at tiny sizes: keys, timings, and equal searches on both envs."""

import json
import math

import pytest

import cube_env
from experiments.speed import queries

TIMING_KEYS = ("seconds", "ms_per_query")


def _positive(row, *keys):
  for k in keys:
    assert isinstance(row[k], float) and math.isfinite(row[k]) and row[k] > 0, (k, row)


@pytest.fixture(scope="module")
def table():
  return queries.table_rows(rows=3000, seed=0, budget=12, max_depth=2)


def test_table_rows_time_both_envs_and_exhaustive(table):
  by = {(r["method"], r["groupby"]): r for r in table}
  assert set(by) == {
    ("ingest", None),
    ("greedy", "index"),
    ("greedy", "segment"),
    ("exhaustive", None),
    ("summary", None),
  }
  assert json.loads(json.dumps(table, allow_nan=False)) == table  # JSON-ready
  for r in table:
    assert r["bench"] == "user_table" and r["rows"] == 3000 and r["columns"] == 12 and r["cells"] > 0
    assert {"device", "platform", "queries" if r["method"] != "summary" else "budget"} <= set(r)
  ingest = by["ingest", None]
  _positive(ingest, "seconds", "space_s")
  assert len(ingest["filter_columns"]) == 12 and len(ingest["measures"]) == 5
  assert ingest["binary_measures"] and ingest["log_measures"]
  for g in ("index", "segment"):
    row = by["greedy", g]
    assert row["queries"] == row["budget"] == 12
    _positive(row, *TIMING_KEYS, "ms_between_queries", "compile_s", "warm_s")
    assert row["result_s"] >= 0 and row["cohorts_visited"] > 1
  ex = by["exhaustive", None]
  _positive(ex, *TIMING_KEYS, "count_s")
  assert ex["queries"] == ex["cohorts"] == sum(ex["cohorts_per_depth"]) and len(ex["cohorts_per_depth"]) == 3
  summary = by["summary", None]
  assert summary["same_search"] is True and summary["cohorts"] == ex["cohorts"]
  assert summary["share_queries"] == math.ceil(0.05 * ex["cohorts"])
  _positive(summary, "today_over_new_ms_per_query", "greedy_share_s_index", "greedy_share_over_exhaustive_segment")


def test_index_and_segment_greedy_make_the_same_search():
  """The digests in the rows stand for the visits: compare the two envs' searches themselves."""
  df, schema = queries.table_frame(3000, 0)
  space = cube_env.make_space(cube_env.build_cube(df, schema), max_depth=2)
  new = cube_env.greedy(space, budget=12, seed=0)
  old = cube_env.greedy(queries.reference_space(space), budget=12, seed=0)
  assert queries.reference_space(space).env.groupby == "segment" and space.env.groupby == "index"
  cols = ["cohort", "parent", "n_new"]
  assert new.visits[cols].equals(old.visits[cols]) and len(new.visits) > 1
  assert queries.visits_digest(new) == queries.visits_digest(old)
  assert queries.visits_digest(new) != queries.visits_digest(cube_env.greedy(space, budget=11, seed=0))


def test_wide_rows_tiny():
  rows = queries.wide_rows(rows=3000, columns=8, queries=6, protected=2, max_depth=2, step_repeats=1)
  by = {(r["method"], r.get("depth")): r for r in rows}
  assert not [r for r in rows if "error" in r]
  assert json.loads(json.dumps(rows, allow_nan=False)) == rows
  assert set(by) == {
    ("generate", None),
    ("ingest", None),
    ("space", None),
    ("greedy", None),
    ("step", 1),
    ("step", 2),
    ("dense_step", None),
  }
  assert all(r["bench"] == "user_wide" and r["columns"] == 8 for r in rows)
  assert by["generate", None]["dimension_categories"][0] == 2 and by["generate", None]["dimension_categories"][-1] == 30
  _positive(by["ingest", None], "seconds")
  _positive(by["space", None], "seconds", "params_s")
  greedy = by["greedy", None]
  assert greedy["queries"] == greedy["budget"] == 6 and greedy["groupby"] == "index"
  _positive(greedy, *TIMING_KEYS, "compile_s")
  for d in (1, 2):
    _positive(by["step", d], *TIMING_KEYS)
    assert by["step", d]["queries"] == 1 and 0 < by["step", d]["cohort_rows"] <= 3000
  assert by["step", 2]["cohort_rows"] <= by["step", 1]["cohort_rows"]
  _positive(by["dense_step", None], "temp_gib")
