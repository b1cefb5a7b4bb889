"""Small counts that come back by one subtraction: within a cohort's tests (`cube_env.hide_remainders`) and
between a cohort and its shown children (`cube_env.hide_cohort_remainders`).

The attackers below are written apart from the library: from a shown table alone, per half and per block (cohort,
protected column, measure), `_leaks` subtracts the shown groups' rows from a row's tested rows (`n_group +
n_rest`), the tested rows from `cohort_rows`, and for a binary measure the shown groups' events (`n x mean`) from
the block's, and one group's (or rest's) count under one measure from its count under another; `_cohort_leaks` subtracts, for each shown cohort and column, the shown children's counts from the
cohort's.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd

import cube_env
from cube_env.data import derivation as dv
from cube_env.data import disclosure
from experiments.report import write_report
from tests.conftest import make_small_df

LIMIT = 11


def _number(value):
  try:
    x = float(value)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def _leaks(table: pd.DataFrame) -> list[tuple]:
  """`(half, block, what, count)` for every count from 1 to 10 got back by one subtraction within a block."""
  out = set()
  for half in ("", "explore_"):
    blocks = {}
    for _, row in table.iterrows():
      blocks.setdefault((row["cohort"], row["protected"], row["measure"]), []).append(row)
    for key, rows in blocks.items():
      n = {r["group"]: _number(r.get(half + "n_group")) for r in rows}
      events = {
        r["group"]: (n[r["group"]], n[r["group"]] * _number(r.get(half + "mean_group")))
        for r in rows
        if r["scale"] == "binary" and n[r["group"]] is not None and _number(r.get(half + "mean_group")) is not None
      }
      for r in rows:
        n_group, n_rest = _number(r.get(half + "n_group")), _number(r.get(half + "n_rest"))
        if n_group is None or n_rest is None:
          continue
        tested, cohort_rows = n_group + n_rest, _number(r.get(half + "cohort_rows"))
        left = [("rows of groups not shown", tested - sum(v for v in n.values() if v is not None))]
        if cohort_rows is not None:
          left.append(("rows without the measure", cohort_rows - tested))
        mean_group, mean_rest = _number(r.get(half + "mean_group")), _number(r.get(half + "mean_rest"))
        if r["scale"] == "binary" and mean_group is not None and mean_rest is not None:
          total = n_group * mean_group + n_rest * mean_rest
          shown_n, shown_events = sum(v[0] for v in events.values()), sum(v[1] for v in events.values())
          left += [("events", total - shown_events), ("non-events", (tested - total) - (shown_n - shown_events))]
        out |= {(half, key, what, round(c)) for what, c in left if 1 <= round(c) < LIMIT}
    # Across measures: a cohort's rows less, per group shown under the protected column, its largest count.
    columns = {}
    for _, row in table.iterrows():
      n, rows = _number(row.get(half + "n_group")), _number(row.get(half + "cohort_rows"))
      entry = columns.setdefault((row["cohort"], row["protected"]), {"rows": None, "groups": {}})
      entry["rows"] = rows if rows is not None else entry["rows"]
      if n is not None:
        entry["groups"][row["group"]] = max(entry["groups"].get(row["group"], 0.0), n)
    for key, entry in columns.items():
      if entry["rows"] is not None and entry["groups"]:
        left = round(entry["rows"] - sum(entry["groups"].values()))
        if 1 <= left < LIMIT:
          out.add((half, key, "rows of groups not shown, over measures", left))
    # One group (or its rest) under two measures: the larger count less the smaller.
    sides = {}
    for _, row in table.iterrows():
      for side in ("n_group", "n_rest"):
        n = _number(row.get(half + side))
        if n is not None:
          sides.setdefault((row["cohort"], row["protected"], row["group"], side), []).append(n)
    for key, counts in sides.items():  # every pair: a measure may be recorded wherever another is
      out |= {(half, key, "rows missing a measure, one group", round(a - b)) for a in counts for b in counts}
    out = {leak for leak in out if leak[2] != "rows missing a measure, one group" or 1 <= leak[3] < LIMIT}
  return sorted(out)


def _counts(table: pd.DataFrame, half: str, adjusted_binary=(), sizes=None) -> dict:
  """`{cohort: {count name: value}}`: every count a shown row gives (rows, rows with a measure, each side's rows and
  events, a group's largest count over measures; for `adjusted_binary` measures the rest's unadjusted events,
  `n_rest x diff / relative_diff`); a cohort is its frozenset of (column, value). `sizes`: `{half: rows}` shown
  beside the table (a report's summary), the whole table's rows where no row gives them."""
  out = {}
  if sizes is not None:
    out[frozenset()] = {"rows": float(sizes[half])}
  for _, r in table.iterrows():
    counts = out.setdefault(frozenset(r["filters"].items()), {})
    n_group, n_rest = _number(r.get(half + "n_group")), _number(r.get(half + "n_rest"))
    mean_group, rows = _number(r.get(half + "mean_group")), _number(r.get(half + "cohort_rows"))
    if rows is not None:
      counts["rows"] = rows
    if n_group is not None and n_rest is not None:
      counts[("tested", r["measure"])] = n_group + n_rest
    test = (r["protected"], r["group"], r["measure"])
    mean_rest = _number(r.get(half + "mean_rest"))
    if n_group is not None:
      counts[("group",) + test] = n_group
      pooled = ("group rows", r["protected"], r["group"])
      counts[pooled] = max(counts.get(pooled, 0.0), n_group)
      if r["scale"] == "binary" and mean_group is not None:
        counts[("events",) + test] = n_group * mean_group
        counts[("non-events",) + test] = n_group * (1 - mean_group)
    if n_rest is not None:
      counts[("rest",) + test] = n_rest
      rate = mean_rest if r["scale"] == "binary" else None
      diff, relative = _number(r.get("diff")), _number(r.get("relative_diff"))
      if r["measure"] in adjusted_binary and half == "" and diff is not None and relative:
        rate = diff / relative  # an adjusted run divides by the unadjusted rest rate
      if rate is not None:
        counts[("rest events",) + test] = n_rest * rate
        counts[("rest non-events",) + test] = n_rest * (1 - rate)
  return out


def _cohort_leaks(table: pd.DataFrame, adjusted_binary=(), sizes=None) -> list[tuple]:
  """`(half, cohort, column, count name, count)` for every count from 1 to 10 got back as a shown cohort's count
  less the sum of its shown children's on one column (`sizes`: as in `_counts`)."""
  out = set()
  for half in ("", "explore_"):
    counts = _counts(table, half, adjusted_binary, sizes)
    for parent, mine in counts.items():
      columns = {c for cohort in counts if parent < cohort and len(cohort - parent) == 1 for c, _ in cohort - parent}
      for column in columns:
        kids = [
          counts[c] for c in counts if parent < c and len(c - parent) == 1 and next(iter(c - parent))[0] == column
        ]
        for name, value in mine.items():
          left = round(value - sum(k[name] for k in kids if name in k))
          if 1 <= left < LIMIT:
            out.add((half, tuple(sorted(parent)), column, str(name), left))
  return sorted(out)


def _group_cohort_leaks(table: pd.DataFrame) -> list[tuple]:
  """`(half, cohort, group, measure, count)` for every count from 1 to 10 got back from a cohort filtered on a
  protected group (`sex = M` within c): its rows less c's test of that group under a measure (the group's rows
  missing it), or c's rows less its rows and that test's rest (the other groups' rows missing it). A test of a
  column of two groups gives the other group's (its `reference`) as its rest."""
  out = set()
  for half in ("", "explore_"):
    counts = _counts(table, half)
    for _, r in table.iterrows():  # the reference group's counts: the rest's, and the tested group's as its rest
      reference = r.get("reference")
      n_group, n_rest = _number(r.get(half + "n_group")), _number(r.get(half + "n_rest"))
      if isinstance(reference, str) and reference != "rest" and n_group is not None and n_rest is not None:
        test = (r["protected"], reference, r["measure"])
        counts[frozenset(r["filters"].items())] |= {("group",) + test: n_rest, ("rest",) + test: n_group}
    for cohort, mine in counts.items():
      for column, value in cohort if "rows" in mine else ():
        parent = counts.get(cohort - {(column, value)}, {})
        for name, n in parent.items():
          if isinstance(name, tuple) and name[:3] == ("group", column, value):
            left = [mine["rows"] - n]
            if "rows" in parent and ("rest",) + name[1:] in parent:
              left.append(parent["rows"] - mine["rows"] - parent[("rest",) + name[1:]])
            out |= {(half, tuple(sorted(cohort)), value, name[3], round(x)) for x in left if 1 <= round(x) < LIMIT}
  return sorted(out)


def test_a_cohort_of_one_group_less_its_parents_test_of_the_group_gives_no_small_count_back():
  """A cohort filtered on a protected group holds that group's rows of its parent: its rows (shown apart from its
  tests) less the parent's test of the group gave the group's rows missing the measure (an audit: 8 male day-shift
  cases missing minutes), and the parent's rows less both the other groups' (the README's demo: 8 non-Medicare
  colectomy cases). By hand, then on a run whose protected columns are searched as filters."""
  parent = {"filters": {"shift": "Day"}, "cohort": "shift=Day", "protected": "sex", "group": "M"}
  child = {"filters": {"shift": "Day", "sex": "M"}, "cohort": "shift=Day & sex=M", "protected": "race", "group": "B"}
  table = pd.DataFrame(
    [
      parent | {"cohort_rows": 2280.0, "n_group": 1369.0, "n_rest": 900.0, "mean_group": 3.0},
      child | {"cohort_rows": 1377.0, "n_group": None, "n_rest": None, "mean_group": None},
    ]
  ).assign(measure="minutes", scale="linear", z=3.0)
  assert [leak[-1] for leak in _group_cohort_leaks(table)] == [3, 8]  # 2280 - 1377 - 900, 1377 - 1369
  shown = disclosure.hide_small_cells(table, 11)
  assert shown.loc[0, ["n_group", "n_rest", "mean_group"]].isna().all() and shown.loc[1, "cohort_rows"] == 1377.0
  assert "from the shown sub-cohort of sex = M" in shown.loc[0, "hidden"] and _group_cohort_leaks(shown) == []
  # A column of two groups tests only one (here F, the other M its `reference`): c's rest is then M's rows with the
  # measure, and the sub-cohort of M gives the same counts back (a review of the rule's first version).
  two = table.assign(group=["F", "B"], reference=["M", "rest"], n_group=[900.0, None], n_rest=[1369.0, None])
  assert [leak[-1] for leak in _group_cohort_leaks(two)] == [3, 8]
  shown = disclosure.hide_small_cells(two, 11)
  assert shown.loc[0, ["n_group", "n_rest", "mean_group"]].isna().all() and _group_cohort_leaks(shown) == []
  # The untested group's rows under two measures, a parent and a child (the second review): the whole table tests F
  # (70) against M (60) under los, site a F (40) against M (55) under cost; M has 5 rows in site b.
  pair = pd.DataFrame(
    [
      {"filters": {}, "measure": "los", "n_group": 70.0, "n_rest": 60.0, "cohort_rows": 130.0},
      {"filters": {"site": "a"}, "measure": "cost", "n_group": 40.0, "n_rest": 55.0, "cohort_rows": 95.0},
    ]
  ).assign(protected="sex", group="F", reference="M", scale="linear", mean_group=1.0, z=3.0)
  pair["cohort"] = [cube_env.cohort_label(f) for f in pair["filters"]]
  assert disclosure.cohort_remainders(pair, 11)  # 60 - 55: the group rows of M
  shown = disclosure.hide_small_cells(pair, 11)
  assert shown.loc[1, ["n_group", "n_rest"]].isna().all() and shown.loc[0, "n_rest"] == 60.0
  eleven = table.assign(n_group=[1366.0, None], n_rest=[892.0, None])  # 11 and 11: nothing to hide
  assert _group_cohort_leaks(eleven) == [] and disclosure.hide_small_cells(eleven, 11)["n_group"].notna().any()
  df = make_small_df(seed=0)
  df.loc[df.index[(df.proc == "A") & (df.sex == "M")][:7], "minutes"] = np.nan
  schema = cube_env.Schema(dimensions=["proc"], protected=["sex", "race"], measures=["minutes"])
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=200, max_depth=2, z_screen=0.01, seed=0)
  assert _group_cohort_leaks(run.findings)
  shown = cube_env.shown_findings(run.findings, run.config.min_group)
  assert _group_cohort_leaks(shown) == [] and _leaks(shown) == [] and _cohort_leaks(shown) == []
  assert shown["n_group"].notna().any()


def _block(**columns) -> pd.DataFrame:
  base = {"cohort": "c", "protected": "race", "measure": "los", "scale": "linear", "reason": "confirmed"}
  size = len(next(iter(columns.values())))
  return pd.DataFrame({**{k: [v] * size for k, v in base.items()}, **columns})


def test_each_remainder_hides_its_block_and_only_where_it_is_small():
  """Rows of groups not shown, rows without the measure, a binary measure's events not shown: 1-10 hides; 0 and
  11 do not; counts and means go for rows, the rate statistics alone for events; the other half stays."""
  # W 600 + B 300 shown of 905 tested: 5 rows in groups not shown (a group under min_group, in the rests).
  rows = _block(
    group=["W", "B"],
    cohort_rows=[905.0, 905.0],
    n_group=[600.0, 300.0],
    n_rest=[305.0, 605.0],
    mean_group=[3.0, 4.0],
    mean_rest=[3.5, 3.1],
    z=[-2.0, 3.0],
    explore_cohort_rows=[911.0, 911.0],
    explore_n_group=[600.0, 300.0],
    explore_n_rest=[311.0, 611.0],
    explore_mean_group=[3.0, 4.0],
    explore_z=[-2.0, 3.0],
  )
  assert len(_leaks(rows)) == 2  # alone and pooled over measures
  shown = cube_env.hide_remainders(rows, 11)
  assert shown[["n_group", "n_rest", "mean_group", "mean_rest", "z"]].isna().all().all()
  assert shown["cohort_rows"].tolist() == [905.0, 905.0]  # other measures' tests give it anyway
  assert shown[["explore_n_group", "explore_mean_group", "explore_z"]].notna().all().all()  # 11 not shown: a count
  assert _leaks(shown) == [] and rows.loc[0, "n_group"] == 600.0  # the input is not changed
  # 0 rows outside the shown groups, 7 rows without the measure: every block of that cohort and measure.
  other = _block(group=["W", "B"], cohort_rows=[907.0] * 2, n_group=[600.0, 300.0], n_rest=[300.0, 600.0])
  sex = _block(group=["F"], protected=["sex"], cohort_rows=[907.0], n_group=[450.0], n_rest=[450.0])
  deeper = _block(group=["F"], cohort=["d"], cohort_rows=[900.0], n_group=[450.0], n_rest=[450.0])
  table = pd.concat([other, sex, deeper], ignore_index=True)
  shown = cube_env.hide_remainders(table, 11)
  assert shown.loc[:2, "n_group"].isna().all() and shown.loc[3, "n_group"] == 450.0
  assert cube_env.hide_remainders(table, 11, prefixes=("explore_",)).equals(table)  # no such columns: unchanged
  # A binary measure: W 1189 rows, 13 events; B 400 rows, 20 events; 406 rows of groups not shown, 4 events.
  binary = _block(
    group=["W", "B"],
    scale=["binary"] * 2,
    measure=["death"] * 2,
    n_group=[1189.0, 400.0],
    n_rest=[806.0, 1595.0],
    mean_group=[13 / 1189, 20 / 400],
    mean_rest=[24 / 806, 17 / 1595],
    z=[-2.0, 2.0],
  )
  assert [what for *_, what, _ in _leaks(binary)] == ["events"]
  shown = cube_env.hide_remainders(binary, 11)
  assert shown[["mean_group", "mean_rest", "z"]].isna().all().all() and shown["n_group"].tolist() == [1189.0, 400.0]
  assert _leaks(shown) == []
  eleven = binary.assign(mean_rest=[31 / 806, 24 / 1595])  # 11 events in the groups not shown: the rates stay
  assert _leaks(eleven) == [] and cube_env.hide_remainders(eleven, 11)["mean_group"].notna().all()


def test_a_runs_shown_findings_give_no_small_count_back():
  """A 5-row race group (never tested; in the rests) and a measure with 6 missing values: the run's own rows give
  those counts back by subtraction, what is shown (`cube_env.discover`, the report) does not."""
  df = make_small_df(seed=0)
  df.loc[df.index[:5], "race"] = "AIAN"
  df.loc[df.index[5:11], "minutes"] = np.nan
  schema = cube_env.Schema(dimensions=["proc", "site"], protected=["race"], measures=["minutes", "complication"])
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=200, max_depth=1, z_screen=0.01, seed=0)
  found = _leaks(run.findings)
  assert {what for *_, what, _ in found} >= {"rows of groups not shown", "rows without the measure"}
  shown = cube_env.shown_findings(run.findings, run.config.min_group)
  assert _leaks(shown) == []
  assert shown["n_group"].notna().any() and shown["mean_group"].notna().any()  # not everything is hidden


def test_a_cohort_less_its_shown_children_gives_no_small_count_back():
  """7 emergent cases (a cohort too small to test, never shown): the whole table's rows less the elective and
  urgent cohorts' give them back, and each group's rows and events likewise; what is shown does not, and the
  hand-made case hides the smallest child large enough (or the parent when no child is)."""
  df = make_small_df(seed=1)
  df.loc[df.index[:7], "urgency"] = "emergent"
  # Opposite gaps in the two large children: each is a new finding beside the whole table's.
  df.loc[(df.sex == "F") & (df.urgency == "elective"), "minutes"] *= 1.3
  df.loc[(df.sex == "F") & (df.urgency == "urgent"), "minutes"] /= 1.3
  schema = cube_env.Schema(dimensions=["urgency", "site"], protected=["sex"], measures=["minutes", "complication"])
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=200, max_depth=1, z_screen=0.01, seed=0)
  assert any(leak[3] == "rows" for leak in _cohort_leaks(run.findings))
  shown = cube_env.shown_findings(run.findings, run.config.min_group)
  assert _cohort_leaks(shown) == [] and _leaks(shown) == []
  assert shown["n_group"].notna().any() and shown["mean_group"].notna().any()
  # By hand: the parent has 500 rows, its children 300 and 195 (5 rows elsewhere): the 195-row child is hidden.
  table = pd.DataFrame(
    {
      "filters": [{}, {"site": "a"}, {"site": "b"}],
      "cohort": ["all", "site=a", "site=b"],
      "protected": ["sex"] * 3,
      "group": ["F"] * 3,
      "measure": ["los"] * 3,
      "scale": ["linear"] * 3,
      "cohort_rows": [500.0, 300.0, 195.0],
      "n_group": [250.0, 150.0, 100.0],
      "n_rest": [250.0, 150.0, 95.0],
      "mean_group": [2.0, 2.0, 2.0],
    }
  )
  assert [leak[3] for leak in _cohort_leaks(table)] == ["('rest', 'sex', 'F', 'los')", "('tested', 'los')", "rows"]
  shown = cube_env.hide_cohort_remainders(table, 11)
  assert shown.loc[2, ["cohort_rows", "n_group", "n_rest", "mean_group"]].isna().all()
  assert shown.loc[0, "cohort_rows"] == 500.0 and shown.loc[1, "n_group"] == 150.0 and _cohort_leaks(shown) == []


def test_the_halves_shown_sizes_less_their_shown_cohorts_give_no_small_count_back(tmp_path):
  """The report's summary shows each half's rows. Where the whole table has no finding of its own (the two urgency
  cohorts' gaps point opposite ways), those rows less the shown elective and urgent cohorts' give the 7 emergent
  cases back (5 and 2 in the halves); `shown_findings(..., halves=run.halves)`, as `discover`, the report and the
  service call it, hides the smaller cohort's counts in each half. Found by a cold audit (2026-12-05)."""
  df = make_small_df(seed=1)
  df.loc[df.index[:7], "urgency"] = "emergent"
  df.loc[(df.sex == "F") & (df.urgency == "elective"), "minutes"] *= 1.3
  df.loc[(df.sex == "F") & (df.urgency == "urgent"), "minutes"] *= 1.3 ** (-7 / 3)  # 70% elective: no gap overall
  schema = cube_env.Schema(dimensions=["urgency", "site"], protected=["sex"], measures=["minutes", "complication"])
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=200, max_depth=1, z_screen=3.0, seed=0)
  assert sorted(run.findings["cohort"]) == ["urgency=elective", "urgency=urgent"]  # no row of the whole table
  sizes = {"": run.halves.confirm_rows, "explore_": run.halves.explore_rows}
  before = cube_env.shown_findings(run.findings, run.config.min_group)
  assert [(half, left) for half, cohort, _, name, left in _cohort_leaks(before, sizes=sizes)] == [
    ("", 5),
    ("explore_", 2),
  ]
  shown = cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)
  assert _cohort_leaks(shown, sizes=sizes) == [] and _leaks(shown) == []
  hidden = shown.set_index("cohort")
  assert pd.isna(
    hidden.loc["urgency=urgent", ["cohort_rows", "n_group", "explore_cohort_rows", "explore_n_group"]]
  ).all()
  assert (
    hidden.loc["urgency=elective", "cohort_rows"] == 1382 and "by urgency" in hidden.loc["urgency=urgent", "hidden"]
  )
  # What people see goes through it: `discover`'s table is the same.
  shown_by_discover = cube_env.discover(
    df, schema, method="exhaustive", budget=200, max_depth=1, z_screen=3.0, seed=0
  ).set_index("cohort")
  assert pd.isna(shown_by_discover.loc["urgency=urgent", "cohort_rows"])
  # And the report's files, whose summary shows the sizes (the service serves these files).
  write_report(run, str(tmp_path / "report"), source="test")
  written = json.loads((tmp_path / "report" / "findings.json").read_text())
  assert written["summary"]["confirmation_rows"] == sizes[""]
  assert _cohort_leaks(pd.DataFrame(written["findings"]), sizes=sizes) == []


def test_a_count_measures_events_are_a_small_cell_too():
  """ED visits 0, 1 or 2 (not 0/1): `n x mean` is a count of visits (6 here), which the binary rule did not cover (a
  cold audit, 2026-12-05). A count measure (whole numbers >= 0) is labelled "count" at ingest; a small event count
  on a side hides the block's rate statistics as a binary measure's does, and the same numbers on the linear
  scale hide nothing; a count's rows without a visit are no count its numbers give, so a large mean hides none."""
  rows = _block(
    group=["g1", "g2"],
    scale=["count", "count"],
    cohort_rows=[704.0, 704.0],
    n_group=[94.0, 610.0],
    n_rest=[610.0, 94.0],
    mean_group=[6 / 94, 0.48],
    mean_rest=[0.48, 6 / 94],
    z=[-8.0, 8.0],
  )
  shown = cube_env.shown_findings(rows, 11)
  assert shown[["mean_group", "mean_rest", "z"]].isna().all(axis=None) and shown["n_group"].tolist() == [94, 610]
  assert cube_env.shown_findings(rows.assign(scale="linear"), 11)["mean_group"].notna().all()
  many = rows.assign(mean_group=[1.99, 1.0], mean_rest=[1.0, 1.99])  # 1 row in 94 without two visits: no count
  assert cube_env.shown_findings(many, 11)["mean_group"].notna().all()
  # Ingest labels it; the cohort statistics carry the label.
  df = make_small_df(seed=0)
  df["los"] = np.round(df["los"])  # whole days, zeros among them: the linear scale
  cube = cube_env.build_cube(df, cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["los", "minutes"]))
  assert cube.meta.is_count == (True, False)
  assert set(cube_env.cohort_stats(cube, {"proc": "A"}).groupby("measure")["scale"].first().items()) == {
    ("los", "count"),
    ("minutes", "log"),
  }


def _value_leaks(table: pd.DataFrame, values: tuple, min_group: float = 11) -> list[tuple[str, str, int, list]]:
  """`(half, side, row, cases)` of every side whose shown numbers give a small count of cases with some value."""
  leaks = []
  for prefix in ("", "explore_"):
    for side in ("group", "rest"):
      cases = disclosure.value_counts(table, values, side, prefix)
      for i in np.flatnonzero(disclosure._small_cells(cases, min_group).any(axis=1)):
        leaks.append((prefix, side, int(i), np.round(cases[i]).tolist()))
  return leaks


def test_a_count_measure_with_three_values_shows_no_small_count_of_any_value():
  """ED visits 0, 1 or 2: a side's rows, mean and variance (or interval) give its cases with each value (a cold
  audit's example gave 7 cases with two visits back while the visits, 21, passed). Ingest records the values of a
  count measure with at most three (`CubeMeta.few_values`), and `shown_findings(..., halves=run.halves)` blanks
  the rate statistics of a block where any value's cases on a side are 1-10, in either half."""
  n, mean = 94.0, 21 / 94  # 80 without a visit, 7 with one, 7 with two
  var = (7 + 4 * 7 - n * mean**2) / (n - 1)
  rows = _block(group=["g1"], scale=["count"], cohort_rows=[400.0], n_group=[n], n_rest=[306.0])
  rows = rows.assign(mean_group=mean, mean_rest=0.5, var_group=var, var_rest=0.5, z=3.0)
  assert np.round(disclosure.value_counts(rows, (0.0, 1.0, 2.0), "group")).tolist() == [[80.0, 7.0, 7.0]]
  assert cube_env.shown_findings(rows, 11)["mean_group"].notna().all()  # events 21: the events rule passes it
  shown = disclosure.hide_small_cells(rows, 11, few_values={"los": (0.0, 1.0, 2.0)})
  assert shown[["mean_group", "mean_rest", "z", "var_group"]].isna().all(axis=None) and shown["n_group"].tolist() == [
    94
  ]
  # The side's interval gives the variance where the variance column is blank.
  half = disclosure.side_quantile(n) * np.sqrt(var / n)
  by_interval = rows.assign(var_group=None, group_ci_low=mean - half, group_ci_high=mean + half)
  assert np.round(disclosure.value_counts(by_interval, (0.0, 1.0, 2.0), "group")).tolist() == [[80.0, 7.0, 7.0]]
  assert disclosure.hide_small_cells(by_interval, 11, few_values={"los": (0, 1, 2)})["mean_group"].isna().all()
  assert disclosure.hide_small_cells(rows, 11, few_values={"los": np.array([0, 1, 2])})["mean_group"].isna().all()
  # Two values (0 or 2 visits): the cases follow from the mean alone.
  two = rows.assign(mean_group=2 * 7 / 94)  # 14 visits, 7 cases
  assert disclosure.hide_small_cells(two, 11, few_values={"los": (0.0, 2.0)})["mean_group"].isna().all()
  assert disclosure.hide_small_cells(two, 11)["mean_group"].notna().all()
  # 17 with one visit, 30 with two: nothing small.
  many = rows.assign(mean_group=(17 + 60) / 94, var_group=(17 + 120 - (77**2) / 94) / 93)
  assert disclosure.hide_small_cells(many, 11, few_values={"los": (0.0, 1.0, 2.0)})["mean_group"].notna().all()
  # A real run: race B at procedure A has more single visits; two visits are rare everywhere.
  rng = np.random.default_rng(3)
  df = make_small_df(seed=3)
  lift = (df.proc == "A") & (df.race == "B")
  df["visits"] = np.where(rng.random(len(df)) < np.where(lift, 0.45, 0.12), 1.0, 0.0)
  df.loc[rng.random(len(df)) < 0.01, "visits"] = 2.0
  schema = cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["visits", "minutes"])
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=50, max_depth=1, z_screen=3.0, seed=0)
  meta = run.halves.explore.meta
  assert meta.is_count == (True, False) and meta.few_values == ((0.0, 1.0, 2.0), ())
  visits = run.findings[run.findings["measure"] == "visits"].reset_index(drop=True)
  assert len(visits) and _value_leaks(visits, (0.0, 1.0, 2.0))  # the run's own numbers give small counts back
  shown = cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)
  assert _value_leaks(shown[shown["measure"] == "visits"].reset_index(drop=True), (0.0, 1.0, 2.0)) == []
  assert shown["hidden"].dropna().str.contains("events or non-events").any()


def _sides(counts: list[tuple[int, int, int]], total: tuple[int, int, int]) -> dict[str, list[float]]:
  """Block columns of groups with these cases of 0, 1 and 2 visits in a block with `total` of each."""

  def moments(c):
    n = sum(c)
    mean = (c[1] + 2 * c[2]) / n
    return float(n), mean, (c[1] + 4 * c[2] - n * mean**2) / (n - 1)

  out: dict[str, list[float]] = {}
  for c in counts:
    rest = tuple(t - x for t, x in zip(total, c))
    for side, cs in (("group", c), ("rest", rest)):
      for name, value in zip(("n", "mean", "var"), moments(cs)):
        out.setdefault(f"{name}_{side}", []).append(value)
  return out


def test_a_few_valued_counts_cases_outside_the_shown_groups_are_hidden():
  """Within a block, the cases with each value less the shown groups' give the groups not shown theirs: 5 with one
  visit and 3 with two here, while their rows (28) and visits (11) pass the older rules."""
  sides = _sides([(150, 30, 20), (140, 20, 12)], total=(310, 55, 35))
  rows = _block(group=["g1", "g2"], scale="count", cohort_rows=400.0, z=[3.0, -3.0], **sides)
  assert disclosure.hide_small_cells(rows, 11)["mean_group"].notna().all()  # rows 28, visits 11: nothing else small
  shown = disclosure.hide_small_cells(rows, 11, few_values={"los": (0.0, 1.0, 2.0)})
  assert shown[["mean_group", "mean_rest", "var_group"]].isna().all(axis=None) and shown["n_group"].notna().all()
  assert shown["hidden"].str.contains("events outside the shown groups").all()
  wider = _sides([(150, 30, 20), (140, 20, 12)], total=(320, 70, 50))  # 15 and 18 outside: nothing small
  fine = _block(group=["g1", "g2"], scale="count", cohort_rows=440.0, z=[3.0, -3.0], **wider)
  assert disclosure.hide_small_cells(fine, 11, few_values={"los": (0.0, 1.0, 2.0)})["mean_group"].notna().all()


def test_a_few_valued_counts_cases_outside_the_shown_sub_cohorts_are_hidden():
  """A cohort's cases with each value less its shown sub-cohorts' give the other sub-cohorts' (5 with each value
  for the group, 5 with one and 5 with two visits for the rest), while their rows and visits pass (15 and 25 rows,
  15 visits each)."""
  cohorts = [({}, (300, 60, 40), (300, 60, 40)), ({"site": "a"}, (180, 35, 20), (185, 35, 20))]
  cohorts.append(({"site": "b"}, (115, 20, 15), (100, 20, 15)))
  frames = []
  for filters, group, rest in cohorts:
    sides = _sides([group], total=tuple(g + r for g, r in zip(group, rest)))
    frames.append(
      _block(group=["F"], scale="count", cohort_rows=float(sum(group) + sum(rest)), z=3.0, **sides).assign(
        filters=[filters], cohort=cube_env.cohort_label(filters), protected="sex"
      )
    )
  table = pd.concat(frames, ignore_index=True)
  assert disclosure.hide_small_cells(table, 11)["mean_group"].notna().all()
  shown = disclosure.hide_small_cells(table, 11, few_values={"los": (0.0, 1.0, 2.0)})
  hidden = shown["mean_group"].isna().to_numpy()
  assert hidden.any() and shown["n_group"].notna().all()  # the rate statistics of a sub-cohort go, its counts stay
  assert shown.loc[hidden, "hidden"].str.contains("shown sub-cohorts").all()
  assert disclosure.cohort_remainders(shown.assign(few_values=[(0.0, 1.0, 2.0)] * 3), 11) == []


def test_a_cohorts_cases_of_a_value_less_its_sub_cohorts_under_another_group_are_hidden():
  """A test's group and rest together are its cohort's cases with each value, whichever group it tests: the whole
  table's test of race B less the sites a and b tests of race A give site c's 9 cases with two visits (a cold
  review of the rule above, 2026-12-05)."""
  cells = {("a", "W"): (300, 60, 40), ("a", "B"): (120, 30, 20), ("a", "A"): (90, 20, 15)}
  cells |= {("b", "W"): (280, 50, 35), ("b", "B"): (110, 25, 18), ("b", "A"): (95, 22, 16)}
  cells |= {("c", "W"): (250, 45, 4), ("c", "B"): (100, 20, 3), ("c", "A"): (80, 15, 2)}

  def cases(sites, races):
    return tuple(sum(cells[(s, r)][k] for s in sites for r in races) for k in range(3))

  frames = []
  for filters, group, sites, others in (
    ({}, "B", "abc", "WA"),
    ({"site": "a"}, "A", "a", "WB"),
    ({"site": "b"}, "A", "b", "WB"),
  ):
    one = cases(sites, group)
    sides = _sides([one], total=tuple(x + y for x, y in zip(one, cases(sites, others))))
    frames.append(
      _block(group=[group], scale="count", cohort_rows=sides["n_group"][0] + sides["n_rest"][0], z=3.0, **sides).assign(
        filters=[filters], cohort=cube_env.cohort_label(filters)
      )
    )
  table = pd.concat(frames, ignore_index=True)
  assert cases("c", "WBA") == (430, 80, 9)
  shown = disclosure.hide_small_cells(table, 11, few_values={"los": (0.0, 1.0, 2.0)})
  assert shown["mean_group"].isna().any() and shown["n_group"].notna().all()
  assert disclosure.cohort_remainders(shown.assign(few_values=[(0.0, 1.0, 2.0)] * 3), 11) == []
  assert disclosure.hide_small_cells(table.drop(columns="measure"), 11, few_values={"los": (0, 1, 2)}).shape[0] == 3


def test_a_binary_cohorts_events_less_its_sub_cohorts_under_another_group_are_hidden():
  """The same for a binary measure: the whole table's test of race B (216 events in all) less the sites a and b
  tests of race A (110 and 97) give site c's 9 events; every side's own events are 20 or more."""
  cells = {("a", "W"): (60, 400), ("a", "B"): (30, 170), ("a", "A"): (20, 125)}
  cells |= {("b", "W"): (50, 365), ("b", "B"): (25, 153), ("b", "A"): (22, 133)}
  cells |= {("c", "W"): (4, 300), ("c", "B"): (3, 123), ("c", "A"): (2, 97)}
  rows = []
  for filters, group, sites in (({}, "B", "abc"), ({"site": "a"}, "A", "a"), ({"site": "b"}, "A", "b")):
    mine = [cells[(s, group)] for s in sites]
    others = [cells[(s, r)] for s in sites for r in "WBA" if r != group]
    (e_g, n_g), (e_r, n_r) = ([sum(x[k] for x in part) for k in (0, 1)] for part in (mine, others))
    rows.append((filters, group, n_g + n_r, float(n_g), float(n_r), e_g / n_g, e_r / n_r))
  names = ("filters", "group", "cohort_rows", "n_group", "n_rest", "mean_group", "mean_rest")
  table = pd.DataFrame([dict(zip(names, r)) for r in rows])
  table = table.assign(cohort=[cube_env.cohort_label(f) for f in table["filters"]], protected="race")
  table = table.assign(measure="any_visit", scale="binary", z=3.0)
  assert sum(cells[("c", r)][0] for r in "WBA") == 9
  shown = disclosure.hide_small_cells(table, 11)
  assert shown["mean_group"].isna().any() and shown["n_group"].notna().all()
  assert shown.loc[shown["mean_group"].isna(), "hidden"].str.contains("shown sub-cohorts").all()


def test_cohort_stats_and_a_log_scale_measure_with_three_values_show_no_small_count_of_a_value():
  """`cohort_stats` shows each test's smd and difference interval, which give both sides' variances: it is hidden
  with the variances in the table (7 women at site a with two visits). Whole numbers 1-3, right-skewed, are tested
  on the log scale: the geometric mean and the logs' variance give each value's cases through the logs (a cold
  review, 2026-12-05)."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"site": rng.choice(["a", "b", "c"], 3000), "sex": rng.choice(["F", "M"], 3000)})
  df["visits"] = (rng.random(3000) < 0.2).astype(float)
  df.loc[df.index[(df.site == "a") & (df.sex == "F")][:7], "visits"] = 2.0
  cube = cube_env.build_cube(df, cube_env.Schema(dimensions=["site"], protected=["sex"], measures=["visits"]))
  stats = cube_env.cohort_stats(cube, {"site": "a"}, z_screen=3.0, max_depth=1)
  assert stats[["mean_group", "smd", "ci_low"]].isna().all(axis=None) and stats["n_group"].notna().all()
  rng = np.random.default_rng(2)
  df = pd.DataFrame({"site": rng.choice(list("abc"), 8000), "race": rng.choice(["W", "B"], 8000, p=[0.7, 0.3])})
  lift = (df.site == "a") & (df.race == "B")
  df["stays"] = np.where(rng.random(8000) < np.where(lift, 0.35, 0.12), 2.0, 1.0)
  df.loc[rng.random(8000) < 0.01, "stays"] = 3.0
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["stays"])
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=20, max_depth=1, z_screen=3.0, seed=0)
  logs = tuple(np.log([1.0, 2.0, 3.0]))
  assert run.halves.explore.meta.is_log == (True,) and np.allclose(run.halves.explore.meta.few_values, [logs])
  assert _value_leaks(run.findings, logs)  # the run's own numbers give small counts of three stays
  assert _value_leaks(cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves), logs) == []


def test_adjusted_values_are_not_solved_for_a_measures_values():
  """With case-mix adjustment the shown means and variances are of adjusted values (observed less expected), which
  give no cases of the measure's values: the value rule blanked two tests of site d, proc z whose every count was
  13 or more (a cold review, 2026-12-05). Adjusted cubes record no values and no count; the unadjusted
  confirmation cube keeps them for its own checks. (The table repeats its rows, 324 patterns in 6,000: since repeated
  rows split independently the draw is seed 2's, on which the old rule blanks under either split seed, 0 or 1.)"""
  rng = np.random.default_rng(2)
  n = 6000
  df = pd.DataFrame({"site": rng.choice(list("abcd"), n), "proc": rng.choice(list("xyz"), n)})
  df = df.assign(race=rng.choice(["W", "B", "A"], n, p=[0.5, 0.3, 0.2]), age=rng.choice(["y", "m", "o"], n))
  age = df.age.map({"y": 0, "m": 1, "o": 2}).to_numpy()
  up = np.array([0.05, 0.4, 0.8])[age] + np.where((df.site == "a") & (df.race == "B"), 0.1, 0.0)
  u = rng.random(n)
  df["score"] = np.where(u < up, 1.0, np.where(u < up + np.array([0.8, 0.3, 0.05])[age], -1.0, 0.0))
  schema = cube_env.Schema(dimensions=["site", "proc"], protected=["race"], measures=["score"])
  run = cube_env.run_discovery(
    df, schema, method="exhaustive", budget=100, max_depth=2, z_screen=2.0, seed=0, adjust=["age"]
  )
  assert run.halves.explore.meta.few_values == () and run.halves.confirm.meta.is_count == ()
  assert run.halves.confirm_raw.meta.few_values == ((-1.0, 0.0, 1.0),)
  wrongly = disclosure.hide_small_cells(run.findings, 11, few_values={"score": (-1.0, 0.0, 1.0)})
  assert wrongly["hidden"].dropna().str.contains("events or non-events").any()  # what the rule did before
  shown = cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)
  assert not shown["hidden"].dropna().str.contains("events or non-events").any()


def _stratum_events(table: pd.DataFrame, stratum: str) -> list[tuple]:
  """`(half, cohort, group, side, count)` for every count from 1 to 10 of a binary measure's events or non-events got
  back from an adjusted run's side interval in a cohort that filters the adjuster `stratum`: there every expected
  value is one number, so the adjusted values' variance is the rate's, n (half width / t)^2 = p (1 - p) n / (n - 1), t
  the side's quantile (`disclosure.side_quantile`, Student's with n - 1 df)."""
  out = []
  for _, r in table.iterrows():
    if stratum not in r["filters"]:
      continue
    for half in ("", "explore_"):
      for side in ("group", "rest"):
        n, lo, hi = (_number(r.get(f"{half}{k}")) for k in (f"n_{side}", f"{side}_ci_low", f"{side}_ci_high"))
        if n is None or lo is None or hi is None:
          continue
        pq = n * ((hi - lo) / 2 / disclosure.side_quantile(n)) ** 2 * (n - 1) / n
        if 0 < pq <= 0.25:
          events = n * (1 - math.sqrt(1 - 4 * pq)) / 2
          out += [
            (half, r["cohort"], r["group"], side, round(k)) for k in (events, n - events) if 1 <= round(k) < LIMIT
          ]
  return out


def test_an_adjusted_rates_side_interval_gives_no_small_count_of_events_back_in_either_half():
  """Within one adjuster stratum (proc = z, adjusted by proc) a binary measure's adjusted values are its 0/1 values
  less one number, so a side's interval gives its rate's variance and the events back: a cold audit recovered 3
  readmissions from the exploration half's numbers, which only the confirmation half's unadjusted events guarded."""
  rng = np.random.default_rng(4)
  n = 8000
  df = pd.DataFrame({"site": rng.choice(list("ab"), n), "proc": rng.choice(list("xyz"), n, p=[0.4, 0.4, 0.2])})
  df["race"] = rng.choice(["W", "B", "A"], n, p=[0.5, 0.3, 0.2])
  df["readmit"] = (rng.random(n) < df.proc.map({"x": 0.1, "y": 0.2, "z": 0.3})).astype(float)
  few = (df.proc == "z") & (df.race == "A")
  df.loc[few, "readmit"] = 0.0
  df.loc[df.index[few][:7], "readmit"] = 1.0  # 7 events in all, a few in each half
  schema = cube_env.Schema(dimensions=["site", "proc"], protected=["race"], measures=["readmit"])
  run = cube_env.run_discovery(
    df, schema, method="exhaustive", budget=100, max_depth=2, z_screen=0.5, seed=0, adjust=["proc"]
  )
  assert {half for half, *_ in _stratum_events(run.findings, "proc")} == {"", "explore_"}  # the run's own numbers
  shown = cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)
  assert _stratum_events(shown, "proc") == []
  assert shown["explore_mean_group"].notna().any() and shown["mean_group"].notna().any()  # not everything hidden


def _table(rows, **common) -> pd.DataFrame:
  """Rows `(filters, protected, group, measure, cohort_rows, n_group, n_rest)`, linear, means 2 and 2.1."""
  names = ("filters", "protected", "group", "measure", "cohort_rows", "n_group", "n_rest")
  table = pd.DataFrame([dict(zip(names, r)) for r in rows])
  table["cohort"] = [cube_env.cohort_label(f) for f in table["filters"]]
  return table.assign(scale="linear", mean_group=2.0, mean_rest=2.1, **common)


def test_counts_combined_across_measures_and_rest_sides_give_nothing_back():
  """A group's rows are the same under every measure without missing values, so groups shown under two measures
  add up (905 - 300 - 600 = 5 rows of a group not shown); a cohort's group rows less its children's under
  another measure (250 - 150 - 95); the rest side of a cohort less its children's (320 - 160 - 155)."""
  across = _table([({}, "race", "B", "minutes", 905.0, 300.0, 605.0), ({}, "race", "W", "los", 905.0, 600.0, 305.0)])
  assert [leak[2] for leak in _leaks(across)] == ["rows of groups not shown, over measures"]
  shown = cube_env.shown_findings(across, 11)
  assert shown[["n_group", "n_rest", "mean_group"]].isna().all().all() and _leaks(shown) == []
  tree = _table(
    [
      ({}, "sex", "F", "minutes", 520.0, 250.0, 270.0),
      ({"site": "a"}, "sex", "F", "minutes", 300.0, 150.0, 150.0),
      ({"site": "b"}, "sex", "F", "minutes", 195.0, 95.0, 100.0),
      ({"site": "b"}, "sex", "F", "los", 195.0, 95.0, 100.0),
    ]
  )
  assert {leak[3] for leak in _cohort_leaks(tree)} >= {"('group rows', 'sex', 'F')"}
  shown = cube_env.shown_findings(tree, 11)
  assert _cohort_leaks(shown) == [] and _leaks(shown) == [] and shown.loc[0, "n_group"] == 250.0
  rest = _table(
    [
      ({}, "sex", "F", "minutes", 620.0, 300.0, 320.0),
      ({"site": "a"}, "sex", "F", "minutes", 310.0, 150.0, 160.0),
      ({"site": "b"}, "sex", "F", "minutes", 290.0, 135.0, 155.0),
    ]
  )
  assert [leak[3] for leak in _cohort_leaks(rest)] == ["('rest', 'sex', 'F', 'minutes')"]  # rows 20, F 15: fine
  assert _cohort_leaks(cube_env.shown_findings(rest, 11)) == []


def test_an_adjusted_runs_relative_difference_gives_no_rest_events_back():
  """With case-mix adjustment the means are excess rates, but the relative difference divides by the unadjusted
  rest rate: n_rest x diff / relative_diff is the rest's events, which the run records (`raw_rest_events`, not
  shown) so that the remainder rules see them."""
  df = make_small_df(seed=0, n=6000)
  df["asa"] = np.random.default_rng(1).choice(["1", "2", "3"], len(df))
  schema = cube_env.Schema(dimensions=["proc", "site"], protected=["race", "sex"], measures=["complication"])
  run = cube_env.run_discovery(
    df, schema, method="exhaustive", budget=200, max_depth=1, z_screen=0.01, seed=0, adjust=("asa",)
  )
  f = run.findings
  derived = np.round(f["n_rest"] * f["diff"] / f["relative_diff"]).to_numpy(float)
  np.testing.assert_array_equal(
    derived[np.isfinite(derived)], f["raw_rest_events"].to_numpy(float)[np.isfinite(derived)]
  )
  shown = cube_env.shown_findings(f, run.config.min_group)
  assert "raw_rest_events" not in shown.columns
  assert _cohort_leaks(shown, adjusted_binary={"complication"}) == [] and _leaks(shown) == []


def _variance_events(table: pd.DataFrame, half: str) -> dict:
  """`{cohort: {(side, protected, group): events}}` as a reader gets a side's events back from its shown variance
  where an adjusted binary test's rows lie in one adjuster stratum: var = n p (1 - p) / (n - 1), p the smaller root
  (the event rates of the test below are under a half)."""
  out = {}
  for _, r in table.iterrows():
    for side in ("group", "rest"):
      n, var = _number(r.get(f"{half}n_{side}")), _number(r.get(f"{half}var_{side}"))
      if n is not None and var is not None and n > 1:
        root = math.sqrt(max(0.0, 1.0 - 4.0 * var * (n - 1.0) / n))
        out.setdefault(frozenset(r["filters"].items()), {})[(side, r["protected"], r["group"])] = n * (1 - root) / 2
  return out


def test_an_adjusted_runs_events_given_back_by_a_variance_in_one_stratum_take_part_in_the_remainder_rules():
  """A review: in one adjuster stratum every expected value is the same, so an adjusted binary side's variance is
  its rate's, n p (1 - p) / (n - 1), and gives its events back. `asa=1`'s tests gave them, as did those of
  `asa=1 & proc=A..D`; the block of `proc=E`, whose events are few, was hidden, and the parent's events less its
  shown children's gave its 5 to 9 events (nothing counted them: `raw_group_events`)."""
  df = make_small_df(seed=0, n=20000)
  df["asa"] = np.random.default_rng(1).choice(["1", "2", "3"], len(df))
  df["proc"] = np.random.default_rng(9).choice(list("ABCDE"), len(df), p=[0.3, 0.3, 0.2, 0.15, 0.05])
  df["complication"] = (np.random.default_rng(2).random(len(df)) < 0.2).astype(float)
  schema = cube_env.Schema(dimensions=["proc", "asa"], protected=["race", "sex"], measures=["complication"])
  config = cube_env.DiscoveryConfig(max_depth=2, z_screen=0.01, seed=0, adjust=("asa",))
  halves = cube_env.prepare(df, schema, config).halves
  cohorts = [{"asa": "1"}] + [{"asa": "1", "proc": p} for p in "ABCDE"]
  candidates = pd.concat([cube_env.cohort_stats(halves.explore, c, z_screen=0.01) for c in cohorts])
  found = cube_env.confirm_candidates(
    candidates[candidates["n_group"].notna()].reset_index(drop=True),
    halves.confirm,
    raw_cube=halves.confirm_raw,
    explore_raw_cube=halves.explore_raw,
    expectation=halves.expectation,
    z_screen=0.01,
    max_depth=2,
  )
  given = _variance_events(found, "")
  recorded = found["raw_group_events"].to_numpy(float)
  np.testing.assert_allclose(  # what the run records is what the variances give back
    recorded,
    [given[frozenset(r["filters"].items())][("group", r["protected"], r["group"])] for _, r in found.iterrows()],
    atol=0.5,
  )

  def leaks(table):
    counts = _variance_events(table, "")
    parent, kids = (
      counts[frozenset({("asa", "1")})],
      [counts.get(frozenset({("asa", "1"), ("proc", p)}), {}) for p in "ABCDE"],
    )
    return {
      key: round(v - sum(k[key] for k in kids if key in k))
      for key, v in parent.items()
      if 1 <= round(v - sum(k[key] for k in kids if key in k)) < LIMIT
    }

  assert leaks(found) == {}  # every child shown: nothing left over
  assert leaks(found[~((found["cohort"] == "proc=E & asa=1") & (found["protected"] == "race"))])  # proc=E hidden
  shown = cube_env.shown_findings(found, 11)
  assert shown.loc[found["cohort"] == "proc=E & asa=1", "var_group"].isna().all()
  assert leaks(shown) == {} and shown["var_group"].notna().any()
  assert not {"raw_group_events", "explore_raw_group_events", "explore_raw_rest_events"} & set(shown.columns)


def test_tables_without_usable_keys_are_shown_without_error():
  """A row whose filters are not a mapping takes no part in the cohort rule; NaN keys are their own label."""
  table = _table(
    [({}, "sex", "F", "los", 500.0, 250.0, 250.0), ({"site": "a"}, "sex", "F", "los", 300.0, 150.0, 150.0)]
  )
  odd = table.astype(object)
  odd.loc[1, "filters"], odd.loc[0, "measure"] = None, float("nan")
  shown = cube_env.shown_findings(odd, 11)
  assert len(shown) == 2 and shown.loc[0, "n_group"] == 250.0


def test_one_groups_rows_under_two_measures_give_nothing_back_and_the_reason_is_shown():
  """W has 600 rows with los and 595 with minutes: 5 W rows lack minutes, while the cohort's 15 rows without
  minutes are not small. The minutes block is hidden (its counts and statistics, in that half), `hidden` says
  which count would have come back, and the los block keeps its numbers."""
  table = _table(
    [
      ({}, "race", "W", "los", 905.0, 600.0, 305.0),
      ({}, "race", "B", "los", 905.0, 305.0, 600.0),
      ({}, "race", "W", "minutes", 905.0, 595.0, 295.0),
      ({}, "race", "B", "minutes", 905.0, 305.0, 585.0),
    ]
  )
  # W's 5 rows without minutes; its rest's 10 (the cohort's 15 less W's 5).
  assert [leak[2:] for leak in _leaks(table)] == [("rows missing a measure, one group", c) for c in (5, 10)]
  shown = cube_env.shown_findings(table, 11)
  assert _leaks(shown) == [] and _cohort_leaks(shown) == []
  assert shown.loc[2:, ["n_group", "n_rest", "mean_group", "mean_rest"]].isna().all().all()
  assert shown.loc[:1, "n_group"].tolist() == [600.0, 305.0] and shown.loc[:1, "hidden"].isna().all()
  fill = ": run the measure on the rows that have it to see them"
  # Said by the first rule that meets it: W's test under los, complete, shows the sub-cohort race = W's rows.
  why = f"the rows missing the measure (fewer than 11) would follow from the shown sub-cohort of race = W{fill}"
  assert shown.loc[2:, "hidden"].tolist() == [why] * 2


def test_the_hidden_column_names_each_rule_and_half():
  """Each rule says why it blanked a row, once per row, the exploration half's prefixed; rows left alone say
  nothing."""
  rows = _block(
    group=["W", "B"],
    cohort_rows=[905.0, 905.0],
    n_group=[600.0, 300.0],
    n_rest=[305.0, 605.0],
    mean_group=[3.0, 4.0],
    explore_cohort_rows=[907.0, 907.0],
    explore_n_group=[600.0, 300.0],
    explore_n_rest=[300.0, 600.0],
    explore_mean_group=[3.0, 4.0],
  )
  shown = cube_env.shown_findings(rows, 11)
  assert (
    shown["hidden"].tolist()
    == [
      "the rows of groups not shown (fewer than 11) would follow by subtraction; this cohort's rows outside the "
      "shown groups or missing a measure (fewer than 11) would follow; exploration half: this cohort's rows outside "
      "the shown groups or missing a measure (fewer than 11) would follow; exploration half: this cohort's rows "
      "missing the measure (fewer than 11) would follow: run the measure on the rows that have it to see them"
    ]
    * 2
  )
  events = _block(group=["W"], scale=["binary"], n_group=[400.0], n_rest=[500.0], mean_group=[5 / 400], mean_rest=[0.1])
  events = events.assign(relative_diff=-0.875, relative_ci_low=-0.95, relative_ci_high=-0.8)
  relative = ["relative_diff", "relative_ci_low", "relative_ci_high"]
  assert cube_env.shown_findings(events, 11)[relative].isna().all(axis=None)  # the interval goes with the difference
  assert cube_env.shown_findings(events, 11)["hidden"].tolist() == [
    "events or non-events (or the cases with one value of the measure) of a group or rest of this block are fewer "
    "than 11"
  ]
  tree = _table([({}, "sex", "F", "los", 500.0, 250.0, 250.0), ({"site": "a"}, "sex", "F", "los", 495.0, 248.0, 247.0)])
  assert cube_env.shown_findings(tree, 11)["hidden"].tolist() == [
    None,
    "a cohort's count less its shown sub-cohorts' by site (fewer than 11) would follow by subtraction",
  ]


def test_rules_repeat_until_nothing_more_can_be_subtracted():
  """Hiding one block must not leave a subtraction between the others (a review's cases): W's counts under three
  measures, each pair nested; the los block hidden (5 rows of the cohort lack los) leaves minutes 620 and cost
  615; a parent whose largest group count is hidden falls to the next (612), 7 above its children's (300 + 305)."""
  three = _table(
    [
      ({}, "race", "W", "los", 1020.0, 650.0, 365.0),
      ({}, "race", "B", "los", 1020.0, 345.0, 670.0),
      ({}, "race", "W", "minutes", 1020.0, 620.0, 320.0),
      ({}, "race", "B", "minutes", 1020.0, 300.0, 640.0),
      ({}, "race", "W", "cost", 1020.0, 615.0, 290.0),
      ({}, "race", "B", "cost", 1020.0, 270.0, 635.0),
    ]
  )
  shown = cube_env.shown_findings(three, 11)
  assert _leaks(shown) == [] and _cohort_leaks(shown) == [] and shown["n_group"].isna().any()
  pairs = _table(  # no largest-minus-each remainder is small, but minutes less cost is
    [({}, "race", "W", m, 1000.0, n, 300.0) for m, n in (("los", 630.0), ("minutes", 615.0), ("cost", 610.0))]
  )
  assert [leak[3] for leak in _leaks(pairs)] == [5]
  shown = cube_env.shown_findings(pairs, 11)
  assert _leaks(shown) == [] and shown.loc[2, "n_group"] is None and shown.loc[1, "n_group"] == 615.0
  tree = _table(
    [
      ({}, "race", "W", "los", 1000.0, 650.0, 305.0),
      ({}, "race", "B", "los", 1000.0, 300.0, 655.0),
      ({}, "race", "W", "minutes", 1000.0, 612.0, 330.0),
      ({}, "race", "B", "minutes", 1000.0, 280.0, 662.0),
      ({"site": "a"}, "race", "W", "los", 500.0, 300.0, 180.0),
      ({"site": "a"}, "race", "W", "minutes", 500.0, 280.0, 170.0),
      ({"site": "b"}, "race", "W", "los", 480.0, 305.0, 150.0),
      ({"site": "b"}, "race", "W", "minutes", 480.0, 290.0, 140.0),
    ]
  )
  shown = cube_env.shown_findings(tree, 11)
  assert _leaks(shown) == [] and _cohort_leaks(shown) == []
  assert "hidden" in cube_env.shown_findings(tree.iloc[4:5], 11).columns  # always there, None where nothing is


def _subcohort_leaks(table: pd.DataFrame) -> list[tuple]:
  """`(half, parent, child, measure, count)` for every count from 1 to 10 got back as a shown count of a cohort's
  rows with a measure (or its rows, where it shows no test of the measure) less a sub-cohort's on one more filter.
  A cohort's test of group g of p shows the rows with the measure of its sub-cohort c & p = g (`n_group`; a column
  of two groups, its reference's as `n_rest`), and its rows where the test's sides hold all of the cohort's."""
  out = set()
  for half in ("", "explore_"):
    shown: dict[frozenset, dict] = {}
    for _, r in table.iterrows():
      cohort = frozenset(r["filters"].items())
      mine = shown.setdefault(cohort, {})
      n_group, n_rest, rows = (_number(r.get(half + c)) for c in ("n_group", "n_rest", "cohort_rows"))
      if rows is not None:
        mine["rows"] = rows
      if n_group is not None and n_rest is not None:
        mine.setdefault(r["measure"], n_group + n_rest)
      reference = r.get("reference")
      sides = [(r["group"], n_group)]
      if isinstance(reference, str) and reference != "rest":
        sides.append((reference, n_rest))
      complete = rows is not None and n_group is not None and n_rest is not None and round(rows - n_group - n_rest) == 0
      for group, n in sides:
        if n is not None and r["protected"] not in dict(cohort):
          sub = shown.setdefault(cohort | {(r["protected"], group)}, {})
          sub.setdefault(r["measure"], n)
          if complete:  # the measure is complete in the cohort: the side's count is its sub-cohort's rows
            sub.setdefault("rows", n)
    for child, theirs in shown.items():
      for item in child:
        parent = shown.get(child - {item}, {})
        for measure, n in theirs.items():
          total = parent.get(measure, parent.get("rows")) if measure != "rows" else parent.get("rows")
          if total is not None and 1 <= round(total - n) < LIMIT:
            out.add((half, tuple(sorted(child - {item})), tuple(sorted(child)), measure, round(total - n)))
  return sorted(out)


def test_a_group_tests_sub_cohort_less_its_parent_on_another_column_gives_no_small_count_back():
  """A service audit: `procedure=cabg & sex=M` shows 40 rows and the test of sex=M in `procedure=cabg &
  site=academic` 35 men with the measure, so 5 men are at the other sites; a test of payer=Other in `site=cs &
  age=80+` shows 13 and one of age=80+ in `site=cs & urgency=elective & payer=Other` 12: 1 non-elective. Each
  time the sub-cohort's test (the smaller count of at least 11) is hidden."""
  a = _table(
    [
      ({"proc": "cabg", "sex": "M"}, "race", "B", "minutes", 40.0, 15.0, 25.0),
      ({"proc": "cabg", "site": "academic"}, "sex", "M", "minutes", 80.0, 35.0, 45.0),
      ({"proc": "cabg", "site": "academic"}, "sex", "M", "los", 80.0, 35.0, 45.0),
      ({"proc": "hip"}, "sex", "M", "minutes", 300.0, 150.0, 150.0),  # nothing to subtract it from
    ]
  )
  assert [leak[2:] for leak in _subcohort_leaks(a)] == [
    ((("proc", "cabg"), ("sex", "M"), ("site", "academic")), "los", 5),
    ((("proc", "cabg"), ("sex", "M"), ("site", "academic")), "minutes", 5),
    ((("proc", "cabg"), ("sex", "M"), ("site", "academic")), "rows", 5),
  ]
  shown = cube_env.shown_findings(a, 11)
  assert shown.loc[1:2, ["n_group", "n_rest", "mean_group"]].isna().all().all()
  assert shown.loc[0, "cohort_rows"] == 40.0 and shown.loc[3, "n_group"] == 150.0
  assert _subcohort_leaks(shown) == [] and _leaks(shown) == [] and _cohort_leaks(shown) == []
  assert "sub-cohorts' by site" in shown.loc[1, "hidden"]
  b = _table(
    [
      ({"site": "cs", "age": "80+"}, "payer", "Other", "minutes", 100.0, 13.0, 87.0),
      ({"site": "cs", "urgency": "elective", "payer": "Other"}, "age", "80+", "minutes", 60.0, 12.0, 48.0),
    ]
  )
  assert [leak[3:] for leak in _subcohort_leaks(b)] == [("minutes", 1), ("rows", 1)]
  shown = cube_env.shown_findings(b, 11)
  assert shown.loc[1, ["n_group", "n_rest"]].isna().all() and shown.loc[0, "n_group"] == 13.0
  assert _subcohort_leaks(shown) == []
  # A review: where a test's sides hold all its cohort's rows, a side's count is its sub-cohort's rows under any
  # measure, so a child cohort's rows (35) or another measure's sub-cohort (12 under los) subtract from it too.
  rows = _table(
    [
      ({"proc": "a"}, "sex", "M", "minutes", 100.0, 40.0, 60.0),
      ({"proc": "a", "sex": "M", "site": "x"}, "race", "B", "los", 35.0, 15.0, 20.0),
    ]
  )
  assert [leak[3:] for leak in _subcohort_leaks(rows)] == [("los", 5), ("rows", 5)]
  shown = cube_env.shown_findings(rows, 11)
  assert shown.loc[1, ["cohort_rows", "n_group"]].isna().all() and shown.loc[0, "n_group"] == 40.0
  assert _subcohort_leaks(shown) == []
  across = b.assign(measure=["minutes", "los"])
  assert [leak[3:] for leak in _subcohort_leaks(across)] == [("los", 1), ("rows", 1)]
  shown = cube_env.shown_findings(across, 11)
  assert shown.loc[1, ["n_group", "n_rest"]].isna().all() and _subcohort_leaks(shown) == []


def test_a_depth_two_runs_group_sub_cohorts_give_no_small_count_back():
  """A run to depth 2 on 1,200 rows whose raw findings give 9 back (the Asian men of `race=A & sex=M` with minutes
  less those of its elective sub-cohort, which `urgency=elective & race=A`'s test of sex shows); what is shown gives
  nothing back by any rule here, and most counts stay shown. (The rules before the sub-cohort one hid that count
  too, through another subtraction; this run guards that the new rule keeps most counts shown.)"""
  df = make_small_df(seed=0, n=1200)
  schema = cube_env.Schema(
    dimensions=["proc", "site", "urgency"], protected=["race", "sex"], measures=["minutes", "complication"]
  )
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=600, max_depth=2, z_screen=0.01, seed=0)
  assert _subcohort_leaks(run.findings)
  shown = cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)
  assert _subcohort_leaks(shown) == [] and _leaks(shown) == [] and _cohort_leaks(shown) == []
  assert _group_cohort_leaks(shown) == [] and shown["n_group"].notna().mean() > 0.7


def test_derivation_closure_follows_chains_and_only_true_steps():
  """`derivation.closure` by hand: a set less a subset, two disjoint sets together, kinds on one set, and nothing
  from sets that differ in two columns or whose union no single condition per column describes."""

  def shown(*items):
    return {(kind, dv.rows_set(c)): (float(v), frozenset([i])) for i, (kind, c, v) in enumerate(items)}

  rows = ("rows",)
  # site = b (87) less site = b & race = W (52): race != W (35); less its men (26): 9 women, from all three.
  found = dv.closure(
    shown(
      (rows, {"site": ("=", "b")}, 87),
      (rows, {"site": ("=", "b"), "race": ("=", "W")}, 52),
      (rows, {"site": ("=", "b"), "sex": ("=", "M"), "race": ("!", ("W",))}, 26),
    ),
    11,
  )
  women = (rows, dv.rows_set({"site": ("=", "b"), "sex": ("!", ("M",)), "race": ("!", ("W",))}))
  assert found.small == [women] and found.known[women] == (9.0, frozenset({0, 1, 2})) and found.complete
  assert found.known[(rows, dv.rows_set({"site": ("=", "b"), "race": ("!", ("W",))}))][0] == 35.0
  # Disjoint sets add up (race = W and race != W: every race), and kinds relate on one set.
  tested = ("tested", "los")
  found = dv.closure(
    shown((tested, {"race": ("=", "W")}, 40), (tested, {"race": ("!", ("W",))}, 30), (rows, {}, 75)),
    11,
    [(rows, tested, ("missing", "los"))],
  )
  assert found.known[(tested, ())][0] == 70.0 and found.known[(("missing", "los"), ())][0] == 5.0
  assert found.small == [(("missing", "los"), ())]
  # Sets that differ in two columns, or two values of one column (race in (W, B)), give nothing.
  found = dv.closure(
    shown((rows, {"race": ("=", "W"), "sex": ("=", "F")}, 40), (rows, {}, 45), (rows, {"race": ("=", "B")}, 3)),
    11,
  )
  assert len(found.known) == 4 and found.small == []  # only race != B (42), from the whole less race = B
  assert dv.within(("=", "a"), ("!", ("b",))) and not dv.within(("!", ("b",)), ("=", "a"))


def test_counts_got_over_several_steps_are_hidden():
  """A disclosure audit: site = b's 87 rows less site = b & race = W's 52 less the 26 of the rest of race W's test in
  site = b & sex = M (a measure with no missing value there, so those are rows) gave 9 non-white women at site b;
  each rule of one step saw nothing. The shown table gives no count from 1 to 10 by any such chain."""
  rows = [
    ({"site": "b"}, "race", "B", "los", 87.0, 20.0, 67.0),
    ({"site": "b", "race": "W"}, "payer", "X", "los", 52.0, 30.0, 22.0),
    ({"site": "b", "sex": "M"}, "race", "W", "los", 45.0, 19.0, 26.0),
  ]
  table = _table(rows, z=3.0)
  assert disclosure.cohort_remainders(table, 11) == [] and _leaks(table) == []  # no rule of one step sees it
  assert disclosure.derived_remainders(table, 11)
  shown = disclosure.hide_small_cells(table, 11)
  assert disclosure.derived_remainders(shown, 11) == []
  assert shown["hidden"].fillna("").str.contains("would follow from several shown counts").any()
  assert shown["n_group"].notna().any()  # not everything is hidden
  # 11 non-white women (site b's rows 89, 22 of race B): nothing to hide.
  rows[0] = ({"site": "b"}, "race", "B", "los", 89.0, 22.0, 67.0)
  assert disclosure.derived_remainders(_table(rows, z=3.0), 11) == []


def test_chains_through_every_value_of_a_column_are_followed_where_its_values_are_known():
  """A review: with sex M/F, `sex != M` (derived) is `sex = F`: 600 rows less the 300 men less the women of sites a
  and b (150, 143) left 7 women at site c, which a closure that knew no column's values did not see."""
  rows = [
    ({}, "race", "B", "los", 600.0, 200.0, 400.0),
    ({"sex": "M"}, "race", "B", "los", 300.0, 100.0, 200.0),
    ({"sex": "F", "site": "a"}, "race", "B", "los", 150.0, 50.0, 100.0),
    ({"sex": "F", "site": "b"}, "race", "B", "los", 143.0, 47.0, 96.0),
  ]
  table = _table(rows, z=3.0)
  values = {"sex": ("F", "M"), "site": ("a", "b", "c"), "race": ("W", "B")}
  assert disclosure.derived_remainders(table, 11) == []  # without the values: not seen
  assert disclosure.derived_remainders(table, 11, categories=values)
  shown = disclosure.hide_small_cells(table, 11, categories=values)
  assert disclosure.derived_remainders(shown, 11, categories=values) == [] and shown["n_group"].notna().any()
  # Two values of a column together: race W and race B are every race.
  found = dv.closure(
    {
      (("rows",), (("race", ("=", "W")),)): (40.0, frozenset([0])),
      (("rows",), (("race", ("=", "B")),)): (30.0, frozenset([1])),
      (("rows",), ()): (75.0, frozenset([2])),
    },
    11,
    domains={"race": ("W", "B", "A")},
  )
  assert found.known[(("rows",), (("race", ("=", "A")),))][0] == 5.0 and found.small


def test_a_derived_counts_sources_are_a_short_chain():
  """`closure` took its work last in, first out, so a count's first derivation (the one kept) could run through
  every shown count: on a 1,857-candidate table chains of up to 132 counts sent the rule to its round limit, which
  hides every count of every chain. Breadth first: b != x is all less b = x (10), from those two."""
  rows = ("rows",)
  shown = {
    (rows, dv.rows_set(c)): (v, frozenset([i]))
    for i, (c, v) in enumerate(
      [({}, 63.0), ({"b": ("=", "x")}, 53.0), ({"b": ("=", "x"), "c": ("=", "x")}, 46.0), ({"c": ("=", "x")}, 55.0)]
    )
  }
  found = dv.closure(shown, 11)
  key = (rows, dv.rows_set({"b": ("!", ("x",))}))
  assert key in found.small and found.known[key] == (10.0, frozenset({0, 1}))


def test_the_several_steps_rule_spares_a_confirmed_findings_numbers_where_another_count_serves():
  """An audit of a 1,857-candidate run: the rule hid, for each chain, the count most chains shared, which was often a
  confirmed finding's (its z blank in 5 of 9). Here total knee's rows less its tested rows (23 missing) less the
  English speakers' (21) give 2 non-English patients missing the measure, and the same with ethnicity gives 5: the
  test both chains share is the confirmed one's, so each chain's other test is hidden instead."""
  rows = [
    ({"proc": "tka"}, "race", "Black", "mme", 1338.0, 150.0, 1165.0),
    ({"proc": "tka", "language": "English"}, "race", "Other", "mme", 1147.0, 351.0, 775.0),
    ({"proc": "tka", "ethnicity": "NotHisp"}, "race", "Other", "mme", 1033.0, 253.0, 762.0),
  ]
  table = _table(rows, z=3.0).assign(confirmed=[True, False, False])
  assert disclosure.cohort_remainders(table, 11) == [] and _leaks(table) == []
  shown = disclosure.hide_small_cells(table, 11)
  assert disclosure.derived_remainders(shown, 11) == []
  assert shown.loc[0, ["n_group", "n_rest", "z"]].notna().all() and shown.loc[1:, "z"].isna().all()
  # Without a confirmed finding the shared count goes: one hide for both chains.
  plain = disclosure.hide_small_cells(table.drop(columns="confirmed"), 11)
  assert plain["z"].isna().tolist() == [True, False, False]


def test_an_adjusted_runs_unadjusted_rest_events_are_shown_only_beside_a_relative_difference():
  """`raw_rest_events` (never shown) is given back by the relative difference; once the rules blank a block's
  statistics it was still read as shown, and the several-steps rule hid counts for it (28 such hides each pass)."""
  rows = [({}, "race", "B", "los", 500.0, 100.0, 400.0), ({"site": "a"}, "race", "B", "los", 300.0, 60.0, 240.0)]
  table = _table(rows, z=3.0).assign(raw_rest_events=[40.0, 35.0])  # 5 events of the rest outside site a
  assert disclosure.derived_remainders(table.assign(relative_diff=0.1), 11)
  assert disclosure.derived_remainders(table.assign(relative_diff=np.nan), 11) == []


def test_chains_through_a_columns_values_are_followed_for_columns_of_up_to_five_values():
  """`race != W` less races A and B is every race but W, A and B: with four races that is race O (30), whose
  patients at site a (25, shown) leave 5 elsewhere. Only a closure that knows the column's four values sees it
  (it knew those of columns of two values only; on a 1,857-candidate run five values cost 21 s against 12 s)."""
  rows = [
    ({}, "race", "W", "los", 300.0, 150.0, 150.0),
    ({"race": "A"}, "sex", "F", "los", 60.0, 30.0, 30.0),
    ({"race": "B"}, "sex", "F", "los", 60.0, 30.0, 30.0),
    ({"race": "O", "site": "a"}, "sex", "F", "los", 25.0, 12.0, 13.0),
  ]
  table = _table(rows, z=3.0)
  values = {"race": ("W", "A", "B", "O"), "site": ("a", "b", "c"), "sex": ("F", "M")}
  assert disclosure.derived_remainders(table, 11) == []
  assert disclosure.derived_remainders(table, 11, categories=values)
  shown = disclosure.hide_small_cells(table, 11, categories=values)
  assert disclosure.derived_remainders(shown, 11, categories=values) == [] and shown["n_group"].notna().any()


def test_the_rules_repeat_while_they_blank_numbers_even_as_they_write_as_many_reasons():
  """A review: the shown cells counted the reasons column, so a hide that blanked 5 numbers of one row and wrote its
  reason into 4 more rows of the block, blank already, left the count as it was: the rules' loops stopped there."""
  rows = [
    ({"proc": "tka"}, "race", "Black", "mme", 1338.0, 150.0, 1165.0),
    ({"proc": "tka", "language": "English"}, "race", "Other", "mme", 1147.0, 351.0, 775.0),
    ({"proc": "tka", "ethnicity": "NotHisp"}, "race", "Other", "mme", 1033.0, 253.0, 762.0),
  ] + [({"proc": "tka"}, "race", g, "mme", np.nan, np.nan, np.nan) for g in ("W", "A", "X", "Y")]
  table = _table(rows).assign(mean_group=[2.0] * 3 + [np.nan] * 4, mean_rest=[2.1] * 3 + [np.nan] * 4)
  table = table.assign(z=[3.0] * 3 + [np.nan] * 4)
  found = disclosure.derived_remainders(table, 11)
  out = table.copy()
  disclosure._hide_quantities(out, found, 11, "")
  assert out["n_group"].notna().sum() < table["n_group"].notna().sum()
  assert disclosure._shown_cells(out) < disclosure._shown_cells(table)


def _whole_count_vectors(values: tuple, n: int, total: float, squares: float) -> np.ndarray:
  """Every vector of whole counts >= 0 of `values` with `n` cases, sum `total` and sum of squares `squares`, by
  enumeration (apart from the library's integer programming)."""
  v, found = np.asarray(values, float), []

  def walk(j: int, left: int, prefix: list) -> None:
    if j == len(v) - 1:
      c = np.array([*prefix, left], float)
      if abs(c @ v - total) < 1e-6 and abs(c @ v**2 - squares) < 1e-6:
        found.append(c)
      return
    for x in range(left + 1):
      walk(j + 1, left - x, [*prefix, x])

  walk(0, n, [])
  return np.array(found)


def test_a_measure_with_four_or_more_values_shows_no_count_its_whole_cases_pin():
  """A cold disclosure audit: complications 0-3 (four values) on a rest of 92 with 81, 9, 2 and 0 cases; its rows,
  mean and interval leave one way to put whole non-negative counts on the values, so 9 and 2 came back, while the
  rule solved only measures of at most three values. Every measure of up to `MOST_FEW_VALUES` values now has each
  side checked among whole counts (`pinned_small`), against an enumeration of every count vector."""
  values, cases = (0.0, 1.0, 2.0, 3.0), np.array([81.0, 9.0, 2.0, 0.0])
  n, mean = cases.sum(), cases @ values / cases.sum()
  var = (cases @ np.square(values) - n * mean**2) / (n - 1)
  half = disclosure.side_quantile(n) * np.sqrt(var / n)
  rows = _block(group=["B"], scale=["count"], cohort_rows=[400.0], n_group=[308.0], n_rest=[n], z=[3.0])
  rows = rows.assign(mean_group=1.2, var_group=0.9, mean_rest=mean, rest_ci_low=mean - half, rest_ci_high=mean + half)
  every = _whole_count_vectors(values, int(n), cases @ values, cases @ np.square(values))
  assert every.tolist() == [cases.tolist()]  # the attacker's answer: one way
  assert cube_env.shown_findings(rows, 11)["mean_rest"].notna().all()  # 13 events: the events rule passes it
  shown = disclosure.hide_small_cells(rows, 11, few_values={"los": values})
  assert shown[["mean_group", "mean_rest", "rest_ci_low", "z"]].isna().all(axis=None)
  assert shown["n_rest"].tolist() == [92] and "cases with one value" in shown["hidden"].iloc[0]
  # 30, 25, 20 and 17 cases: many ways, none small: shown.
  fine = np.array([30.0, 25.0, 20.0, 17.0])
  f_mean, f_var = fine @ values / 92, (fine @ np.square(values) - fine @ values * (fine @ values) / 92) / 91
  f_half = disclosure.side_quantile(92) * np.sqrt(f_var / 92)
  ok = rows.assign(mean_rest=f_mean, rest_ci_low=f_mean - f_half, rest_ci_high=f_mean + f_half)
  assert disclosure.hide_small_cells(ok, 11, few_values={"los": values})["mean_rest"].notna().all()
  # Against the enumeration: sides of 11-24 rows over four or five values (small sides are the ones pinned).
  rng = np.random.default_rng(7)
  verdicts = []
  for _ in range(60):
    k = int(rng.integers(4, 6))
    vals = tuple(float(x) for x in np.sort(rng.choice(7, k, replace=False)))
    c = rng.multinomial(int(rng.integers(11, 25)), rng.dirichlet(np.full(k, 0.4))).astype(float)
    total, squares = c @ vals, c @ np.square(vals)
    all_c = _whole_count_vectors(vals, int(c.sum()), total, squares)
    want = any(((all_c[:, j] >= 1) & (all_c[:, j] <= 10)).all() for j in range(k))
    verdicts.append((disclosure._pinned(vals, int(c.sum()), total, squares, 11), want))
  assert all(got == want for got, want in verdicts) and {w for _, w in verdicts} == {True, False}
  # Ingest records the values of a measure with up to MOST_FEW_VALUES of them, and none of one with more.
  df = make_small_df(seed=0)
  df["asa"] = np.arange(len(df)) % 4 + 1.0
  df["pain"] = np.arange(len(df)) % (disclosure.MOST_FEW_VALUES + 1) + 0.0
  cube = cube_env.build_cube(df, cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["asa", "pain"]))
  assert cube.meta.few_values == ((1.0, 2.0, 3.0, 4.0), ())


def test_four_valued_cases_whole_counts_determine_are_followed_between_cohorts():
  """Whole counts can determine a side's cases of a measure of four values (stays of 1-4 days, none over 2 here:
  one way to put them), and then a cohort's cases less its shown sub-cohorts' give the others': site c's 6 and 5
  stays of one and two days, while its rows (11 and 20) and days (16 and 25) pass every other rule."""
  values = (1.0, 2.0, 3.0, 4.0)

  def moments(c):  # a side's rows, mean and variance from its cases of 1, 2, 3 and 4 days
    c = np.asarray(c, float)
    n, total, squares = c.sum(), c @ values, c @ np.square(values)
    return n, total / n, (squares - total**2 / n) / (n - 1)

  cells = {"a": ((180, 35, 0, 0), (185, 35, 0, 0)), "b": ((115, 20, 0, 0), (100, 20, 0, 0))}
  cells["c"] = ((6, 5, 0, 0), (15, 5, 0, 0))
  frames = []
  for filters, sites in (({}, "abc"), ({"site": "a"}, "a"), ({"site": "b"}, "b")):
    group, rest = (tuple(sum(cells[s][side][k] for s in sites) for k in range(4)) for side in (0, 1))
    sides = {}
    for side, c in (("group", group), ("rest", rest)):
      for name, value in zip(("n", "mean", "var"), moments(c)):
        sides[f"{name}_{side}"] = [value]
    frames.append(
      _block(group=["F"], scale="count", cohort_rows=float(sum(group) + sum(rest)), z=3.0, **sides).assign(
        filters=[filters], cohort=cube_env.cohort_label(filters), protected="sex"
      )
    )
  table = pd.concat(frames, ignore_index=True)
  n, mean, var = moments((180, 35, 0, 0))
  assert disclosure._determined(values, int(n), n * mean, (n - 1) * var + n * mean**2) == (180.0, 35.0, 0.0, 0.0)
  assert disclosure.hide_small_cells(table, 11)["mean_group"].notna().all()
  shown = disclosure.hide_small_cells(table, 11, few_values={"los": values})
  hidden = shown["mean_group"].isna().to_numpy()
  assert hidden.any() and shown["n_group"].notna().all()
  assert shown.loc[hidden, "hidden"].str.contains("shown sub-cohorts").all()
  assert disclosure.cohort_remainders(shown.assign(few_values=[values] * 3), 11) == []
  # Against an enumeration of every count vector: a value is determined exactly where all of them agree on it.
  rng = np.random.default_rng(11)
  for _ in range(40):
    vals = tuple(float(x) for x in np.sort(rng.choice(7, 4, replace=False)))
    c = rng.multinomial(int(rng.integers(11, 25)), rng.dirichlet(np.full(4, 0.4))).astype(float)
    every = _whole_count_vectors(vals, int(c.sum()), c @ vals, c @ np.square(vals))
    want = np.where((every == every[0]).all(axis=0), every[0], np.nan)
    got = np.asarray(disclosure._determined(vals, int(c.sum()), c @ vals, c @ np.square(vals)))
    np.testing.assert_array_equal(got, want)


def test_the_whole_count_check_runs_in_a_process_without_standard_output():
  """The check sends file descriptor 1 to the null device while HiGHS runs (its stray debug line); a service worker
  started with its standard output closed (`>&-`) has none to redirect, and the check must still answer."""
  code = (
    "import sys; from cube_env.data import disclosure as d; "
    "sys.stderr.write(str(d._pinned((0.0, 1.0, 2.0, 3.0), 92, 13.0, 17.0, 11)))"
  )
  done = subprocess.run(
    [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1), timeout=120
  )
  assert done.returncode == 0 and done.stderr.strip().endswith("True"), done.stderr[-2000:]


def test_the_solvers_stray_line_never_reaches_a_piped_standard_output():
  """HiGHS prints a debug line with C's `puts` on some problems; into a pipe or file C buffers it, and a review saw
  it written after the descriptor came back. C's buffers are flushed to the null device first."""
  code = (
    "import ctypes; from cube_env.data import disclosure as d; print('before', flush=True)\n"
    "with d._solver_output_dropped():\n  ctypes.CDLL(None).puts(b'stray solver line')\n"
    "print('after', flush=True); ctypes.CDLL(None).fflush(None)"
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert done.returncode == 0 and done.stdout.split() == ["before", "after"], done.stdout + done.stderr[-2000:]
