"""The console summary of a discovery run: data, method, counts, the top findings story by story, the truth score."""

from __future__ import annotations

import numpy as np
import pandas as pd

import cube_env
from cube_env.discovery.pipeline import confirmation_rule, warnings_in
from experiments.report.files import count_stories, explore_new_z, search_ended
from experiments.report.markup import p_text, plural, printable, z_text

SHOWN = [
  "story",
  "cohort",
  "protected",
  "group",
  "measure",
  "n_group",
  "n_rest",
  "mean_group",
  "mean_rest",
  "relative_diff",
  "relative_ci",  # relative_ci_low to relative_ci_high, where the findings have them
  "z",
  "p_adjusted",
]


MEMBER_MARK = "  + "  # before the cohort of a story's other findings, under its lead


def _left(texts: list[str]) -> list[str]:
  """Texts padded to one width, so that pandas (which right-aligns text) prints them left-aligned."""
  width = max((len(t) for t in texts), default=0)
  return [t.ljust(width) for t in texts]


def _relative_ci(low, high) -> str | None:
  """ "0.344 to 0.466" ("-" when either end is blank)."""
  if pd.isna(low) or pd.isna(high):
    return "-"
  return f"{float(low):.3g} to {float(high):.3g}"


def story_view(findings: pd.DataFrame) -> pd.DataFrame:
  """`SHOWN` columns as printed, story by story, then `confirmed` and (where the findings have it) `reason`.

  A lead shows its story number and, when it has any, how many other findings follow it ("0 (+2)"); those
  follow with their cohort indented by `MEMBER_MARK` and a blank story; unconfirmed candidates show "-" and
  their reason (a confirmed finding's is blank, or why its numbers are hidden). `relative_ci` is the interval of `relative_diff`
  (`relative_ci_low` to `relative_ci_high`), `p_adjusted` is printed by `p_text` (never an underflow's 0), `z` by `z_text` ("≥ 40" at the cap).
  """
  out = findings.copy()
  if "story" not in out.columns:  # a table from elsewhere: each confirmed finding is its own story
    confirmed = out["confirmed"].astype(bool).to_numpy()
    out["story"], out["story_lead"], out["story_size"] = np.where(confirmed, np.cumsum(confirmed) - 1, -1), confirmed, 1
  lead = out["story_lead"].astype(bool).to_numpy()
  member = out["confirmed"].astype(bool).to_numpy() & ~lead
  out["story"] = _left(
    [
      (f"{s} (+{n - 1})" if n > 1 else str(s)) if is_lead else ("" if is_member else "-")
      for s, n, is_lead, is_member in zip(out["story"], out["story_size"], lead, member)
    ]
  )
  out["cohort"] = _left([MEMBER_MARK + c if m else c for c, m in zip(out["cohort"].astype(str), member)])
  if {"relative_ci_low", "relative_ci_high"} <= set(out.columns):
    out["relative_ci"] = [_relative_ci(lo, hi) for lo, hi in zip(out["relative_ci_low"], out["relative_ci_high"])]
  if "p_adjusted" in out.columns:
    out["p_adjusted"] = [None if pd.isna(p) else p_text(float(p), 3) for p in out["p_adjusted"]]
  if "z" in out.columns:
    out["z"] = [None if pd.isna(z) else z_text(float(z), 3) for z in out["z"]]
  extra = ["confirmed"]
  if "reason" in out.columns:
    hidden = out["hidden"] if "hidden" in out.columns else pd.Series([None] * len(out), index=out.index)
    out["reason"] = _left(
      [
        (f"numbers hidden: {h}" if isinstance(h, str) else "") if c else str(r)
        for c, r, h in zip(out["confirmed"].astype(bool), out["reason"], hidden)
      ]
    )
    extra.append("reason")
  return out[[c for c in SHOWN if c in out.columns] + extra]


def print_summary(run: cube_env.Discovery, *, source: str, score: dict | None, paths: dict, show: int) -> None:
  """Prints the summary to stdout; counts under `min_group` in the coding notes are redacted, and control characters
  of the table's names and values are printed as escapes (`markup.printable`)."""
  s, c = run.search, run.config

  _say(f"data: {source}; {run.halves.explore_rows} exploration rows, {run.halves.confirm_rows} confirmation rows")
  for line in run.halves.summary:
    _say(f"  {cube_env.note_text(line, c.min_group)}")
  _say(
    f"method: {c.method}; {s.queries} group-by queries of {c.budget}, stopped {search_ended(run)}; "
    f"{s.seconds:.1f} s searching, {run.seconds:.1f} s in all; |z| >= {s.z_screen:.2f}, new at z "
    f"{explore_new_z(run):.2f}" + (f"; {s.note}" if s.note else "")
  )
  n_conf = int(run.findings["confirmed"].sum()) if len(run.findings) else 0
  n_stories = count_stories(run.findings)
  _say(
    f"{plural(len(run.findings), 'candidate')} (new findings on the exploration half), {n_conf} confirmed in "
    f"{plural(n_stories, 'story', 'stories')} ({confirmation_rule(c)})"
  )
  if len(run.findings):
    view = story_view(cube_env.shown_findings(run.findings, c.min_group, halves=run.halves).head(show))
    for col in ("n_group", "n_rest"):  # counts as whole numbers, not 1.04e+03
      if col in view.columns:
        view[col] = pd.to_numeric(view[col], errors="coerce").round().astype("Int64")
    view = view.apply(lambda column: column.map(_cell))
    with pd.option_context("display.width", 220, "display.max_colwidth", 120):  # room for a reason
      _say(view.to_string(index=False))
  if score is not None:
    for stage, sc in score.items():
      _say(
        f"truth ({stage}): {sc['n_truth']} planted; recall {_share(sc['recall'])}; precision {_share(sc['precision'])} "
        f"({sc['n_false']} false of {sc['n_reported']})"
      )
  warnings = warnings_in(cube_env.note_text(line, c.min_group) for line in run.halves.summary)
  if warnings:  # once more below the table, where a reader looks last (an analyst's audit)
    _say("check these first (how the table was read; each is also above):")
    for line in warnings:
      _say(f"  {line}")
  _say(f"report: {paths['report.html']} (also findings.json, findings.csv)")


def _say(text: str) -> None:
  """Prints a line of the summary with control characters as escapes (`markup.printable`)."""
  print(printable(text))


def _share(value: float) -> str:
  """A share to 2 decimals, or "-" where it is undefined (the precision of no findings), not "nan"."""
  return f"{value:.2f}" if np.isfinite(value) else "-"


def _cell(value) -> str:
  """A cell of the printed table: a number to 3 significant digits, a blank one (hidden, untested, no rows on a
  side) "-" as in the report, never None, NaN or <NA>."""
  if value is None or value is pd.NA or isinstance(value, (float, np.floating)) and np.isnan(value):
    return "-"
  if isinstance(value, (float, np.floating)):
    return f"{value:.3g}"
  return str(value)
