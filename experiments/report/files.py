"""The findings files of a discovery run: findings.json, findings.csv and report.html (docs/design.md, Discovery and confirmation).

Counts below `min_group` never reach the report: the tables carry None there
(`cube_env` suppresses them), as do the statistics of a binary test whose events
on a side are that few (`findings_table`), and the coding notes are redacted. The CSV and
JSON list the findings story by story (`story`, `story_lead`, `story_size`:
each story's lead, then its other findings; unconfirmed candidates last, story -1).

The CSV alone has a column `warnings`, the same on every row: the run's coding notes that are warnings (those the
report's "Check these first" box shows, redacted as the summary's `coding`; `warnings_in`), joined by " | ", empty
where there are none. A CSV forwarded alone (to a clinical lead, say) would otherwise lose every caveat of how the
table was read (an analyst's audit: rows swallowed inside a quoted value, words read as missing). The JSON's records
leave it out: its `summary.coding` holds each note once; and a run with no candidate writes a CSV of its header
alone, whose warnings are then in findings.json and report.html only.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd

import cube_env
from cube_env.discovery.journal import fsync_dir, write_atomic
from cube_env.discovery.pipeline import confirmation_rule, warnings_in
from experiments.report.markup import P_COLUMNS, P_FLOOR, p_text, render_html

CSV_COLUMNS = (
  "confirmed",
  "story",
  "story_lead",
  "story_size",
  "reason",
  "hidden",  # why the small-cell rule blanked a row's numbers
  "warnings",  # findings.csv only: the run's warnings, the same on each row (a CSV forwarded alone keeps them)
  "cohort",
  "protected",
  "group",
  "reference",
  "measure",
  "direction",  # the group's (adjusted) mean or rate against its reference: "higher" or "lower", where numbers are not
  "scale",
  "cohort_rows",
  "n_group",
  "n_rest",
  "mean_group",
  "mean_rest",
  "diff",
  "ci_low",
  "ci_high",
  "ratio",
  "smd",  # the effect size of a measure with values below 0, which has no relative_diff (a report audit)
  "relative_diff",
  "relative_ci_low",
  "relative_ci_high",
  "z",
  "p_value",
  "p_confirm",
  "p_adjusted",
  "group_ci_low",
  "group_ci_high",
  "rest_ci_low",
  "rest_ci_high",
  "path",
  "explore_cohort_rows",
  "explore_n_group",
  "explore_n_rest",
  "explore_mean_group",
  "explore_mean_rest",
  "explore_diff",
  "explore_ci_low",
  "explore_ci_high",
  "explore_z",
  "explore_p_value",
  "explore_group_ci_low",
  "explore_group_ci_high",
  "explore_rest_ci_low",
  "explore_rest_ci_high",
  "query",
  "depth",
  "filters",
)


def _clean(value: Any) -> Any:
  """JSON-safe value: numpy scalars to Python, NaN and inf to None."""
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def findings_table(run: cube_env.Discovery) -> pd.DataFrame:
  """The findings in report order and columns (CSV_COLUMNS present in the run), as shown (`cube_env.shown_findings`:
  the relative difference's interval is blank wherever the small-cell rule blanks the relative difference)."""
  f = cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)
  return f[[c for c in CSV_COLUMNS if c in f.columns]].copy()


def count_stories(findings: pd.DataFrame) -> int:
  """Stories among the confirmed findings (each confirmed finding its own without a `story` column)."""
  if not len(findings):
    return 0
  if "story_lead" not in findings.columns:
    return int(findings["confirmed"].astype(bool).sum())
  return int((findings["story_lead"].astype(bool) & findings["confirmed"].astype(bool)).sum())


def search_ended(run: cube_env.Discovery) -> str:
  """Why the search stopped: its budget spent, or before it: its time limit or nothing left to visit
  (`SearchResult.stopped_by`; a result without it, put together by hand, is read off its queries and seconds)."""
  c, search = run.config, run.search
  stopped = search.stopped_by
  if stopped == cube_env.STOPPED_BUDGET or (not stopped and search.queries >= c.budget):
    return "at its budget" if search.queries >= c.budget else "at its budget (its next depth would not fit it)"
  if stopped == cube_env.STOPPED_TIME:
    return "before its budget: at its time limit" + ("" if c.time_limit is None else f" ({c.time_limit:g} s)")
  if stopped == cube_env.STOPPED_DONE:
    return "before its budget: the method had no cohort left to visit"
  if c.time_limit is not None and search.seconds >= c.time_limit:
    return f"before its budget: at its time limit ({c.time_limit:g} s), or with no cohort left to visit"
  return "before its budget: the method had no cohort left to visit"


def explore_new_z(run: cube_env.Discovery) -> float:
  """The exploration's newness threshold (`DiscoveryConfig.explore_new_z`, or z_screen where it is None): which of a
  visited cohort's gaps became candidates. The summary and the console give it (it was given nowhere, so two runs'
  reports could not be told apart)."""
  return run.search.z_screen if run.config.explore_new_z is None else run.config.explore_new_z


def summary(run: cube_env.Discovery, *, source: str, truth: dict | None = None) -> dict:
  c = run.config
  out = {
    "data": source,
    "exploration_rows": run.halves.explore_rows,
    "confirmation_rows": run.halves.confirm_rows,
    "method": c.method,
    "budget": c.budget,
    "queries": run.search.queries,
    "search_seconds": round(run.search.seconds, 2),
    "total_seconds": round(run.seconds, 2),
    "cohorts_visited": len(run.search.visits),
    "candidates": len(run.findings),
    "confirmed": int(run.findings["confirmed"].sum()) if len(run.findings) else 0,
    "stories": count_stories(run.findings),
    "z_screen": round(run.search.z_screen, 3),
    "explore_new_z": round(explore_new_z(run), 3),
    "q": c.q,
    "confirmation": confirmation_rule(c),
    "min_relative_diff": c.min_relative_diff,
    "max_depth": c.max_depth,
    "min_group": c.min_group,
    "adjusted_by": list(c.adjust),
    "favorable": list(c.favorable),
    "explore_fraction": c.explore_fraction,
    "max_categories": c.max_categories,
    "time_limit": c.time_limit,
    "search_ended": search_ended(run),
    "seed": c.seed,
    "method_note": run.search.note,
    "coding": [cube_env.note_text(line, c.min_group) for line in run.halves.summary],
  }
  if truth is not None:
    out["truth"] = truth
  return _clean(out)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell that starts so as a formula


def _spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
  """The table with each text cell that a spreadsheet would take for a formula (`FORMULA_STARTS`; a category
  named '=HYPERLINK(...)' in the data) prefixed with an apostrophe, which shows it as text (OWASP's advice for CSV
  injection). Numbers, negative ones included, are numbers in the file and stay as they are."""
  out = table.copy()
  for column in out.columns:
    if pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column]):
      continue
    out[column] = [f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v for v in out[column]]
  return out


def floored_p(table: pd.DataFrame) -> pd.DataFrame:
  """The table with each p-value (`P_COLUMNS`) below `P_FLOOR` written as the text "< 1e-300", as the report and
  the console show it. float64 holds no p under about 1e-308: a |z| at the statistics' cap of 40 has p exactly 0.0
  (a cold audit found findings.csv, findings.json and so the service's API writing it), which a reader takes for an
  impossible certainty; every other p stays a number."""
  out = table.copy()
  for column in P_COLUMNS & set(out.columns):
    values = out[column]
    low = values.notna() & (values.astype(float) < P_FLOOR)
    if low.any():
      out[column] = [p_text(0.0) if is_low else v for v, is_low in zip(values.astype(object), low)]
  return out


WARNINGS_JOIN = " | "  # between the warnings in findings.csv's `warnings` cell


def csv_table(table: pd.DataFrame, coding: list[str]) -> pd.DataFrame:
  """findings.csv's rows: `table` (`findings_table`) with the `warnings` of the run's shown (redacted) coding notes
  `coding` on each row, `filters` as JSON, and each text cell a spreadsheet would run written as text."""
  csv = floored_p(table).assign(warnings=WARNINGS_JOIN.join(warnings_in(coding)))
  if "filters" in csv.columns:
    csv["filters"] = [json.dumps(_clean(f)) for f in csv["filters"]]
  return _spreadsheet_safe(csv[[c for c in CSV_COLUMNS if c in csv.columns]])


def write_report(
  run: cube_env.Discovery, out_dir: str, *, source: str, truth: dict | None = None, planted: pd.DataFrame | None = None
) -> dict[str, str]:
  """Writes findings.json, findings.csv and report.html into `out_dir`; returns their paths.

  Args:
    run: from `cube_env.run_discovery`.
    source: how the data are described (file name or synthetic scenario).
    truth: `cube_env.truth_score(run, planted_effects)` for synthetic data.
    planted: one row per planted effect (cohort, protected, group, measure,
      effect, recalled) for the truth section.
  """
  os.makedirs(out_dir, exist_ok=True)
  table = findings_table(run)
  info = summary(run, source=source, truth=truth)
  paths = {name: os.path.join(out_dir, name) for name in ("findings.json", "findings.csv", "report.html")}
  records = [_clean(r) for r in floored_p(table).to_dict("records")]
  texts = {
    "findings.json": json.dumps({"summary": info, "findings": records}, indent=1, allow_nan=False),
    "findings.csv": csv_table(table, info["coding"]).to_csv(index=False),
    "report.html": render_html(run, info, table, planted=planted),
  }
  for name, text in texts.items():  # each whole or not at all, and durable (an audit: a crash left an empty one)
    write_atomic(paths[name], text.encode("utf-8"))
  fsync_dir(out_dir)
  return paths
