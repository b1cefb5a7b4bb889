"""The HTML report: one self-contained file of well-formed XHTML-style markup.

Plots are base64 PNGs (`experiments.report.plots`); every value that comes
from the data (category names come from user files) is HTML-escaped.
Confirmed findings are shown story by story (`cube_env.discovery.stories`):
one row per story, its lead, with the story's other findings in a collapsible
table in that row; the plots are of the leads.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

import cube_env
from experiments.report.plots import MAX_PLOTS, finding_plot, tree_plot


def esc(value: Any) -> str:
  """Escaped text of a value (numbers to 4 significant digits; None as a dash)."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if isinstance(value, (float, np.floating)):
    return html.escape(f"{float(value):.4g}")
  return html.escape(str(value), quote=True)


def _table(df: pd.DataFrame, columns: list[str]) -> str:
  cols = [c for c in columns if c in df.columns]
  head = "".join(f"<th>{esc(c)}</th>" for c in cols)
  body = "".join(
    "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in df[cols].itertuples(index=False)
  )
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str, alt: str) -> str:
  return f'<img src="{uri}" alt="{esc(alt)}"/>'


STYLE = (
  "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:85%}"
  "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}.plots img{margin:4px}"
  "details table{font-size:100%;margin-top:4px}summary{cursor:pointer;white-space:nowrap}"
)

VIEW = [
  "cohort",
  "protected",
  "group",
  "reference",
  "measure",
  "n_group",
  "n_rest",
  "mean_group",
  "mean_rest",
  "diff",
  "ci_low",
  "ci_high",
  "relative_diff",
  "z",
  "p_value",
  "p_adjusted",
  "explore_z",
  "path",
]
# A story's other findings, under its lead: what differs from the lead (cohort, maybe the mirror group) and the evidence.
MEMBER_VIEW = [
  "cohort",
  "group",
  "reference",
  "n_group",
  "n_rest",
  "mean_group",
  "mean_rest",
  "relative_diff",
  "z",
  "p_adjusted",
]


def stories_of(confirmed: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
  """(lead row, the story's other rows) per story, in table order; without a `story` column each row is its own."""
  if "story" not in confirmed.columns:
    return [(r, confirmed.iloc[0:0]) for r in confirmed.to_dict("records")]
  out = []
  for _, rows in confirmed.groupby("story", sort=False):
    lead = rows["story_lead"].astype(bool).to_numpy()
    out.append((rows[lead].iloc[0].to_dict(), rows[~lead]))
  return out


def _members_row(members: pd.DataFrame, width: int) -> str:
  """The row under a lead: its story's other findings in a collapsible table (nothing when it has none)."""
  if not len(members):
    return ""
  n = len(members)
  label = f"{n} more finding{'s' if n > 1 else ''} of this story"
  details = f"<details><summary>{esc(label)}</summary>{_table(members, MEMBER_VIEW)}</details>"
  return f'<tr class="members"><td></td><td colspan="{width}">{details}</td></tr>'


def _stories_table(confirmed: pd.DataFrame) -> str:
  """One headline row per story (its lead's `VIEW` values), each followed by a row of its other findings."""
  cols = [c for c in VIEW if c in confirmed.columns]
  head = "".join(f"<th>{esc(c)}</th>" for c in ["story", *cols])
  body = []
  for k, (lead, members) in enumerate(stories_of(confirmed)):
    cells = "".join(f"<td>{esc(lead[c])}</td>" for c in cols)
    body.append(f"<tr><td>{esc(lead.get('story', k))}</td>{cells}</tr>{_members_row(members, len(cols))}")
  return f'<table class="stories"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_html(
  run: cube_env.Discovery, info: dict, table: pd.DataFrame, *, planted: pd.DataFrame | None = None
) -> str:
  confirmed = table[table["confirmed"].astype(bool)] if len(table) else table
  other = table[~table["confirmed"].astype(bool)] if len(table) else table
  parts = [
    '<?xml version="1.0" encoding="utf-8"?>',
    "<!DOCTYPE html>",
    '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>',
    f"<title>Disparity findings: {esc(info['data'])}</title><style>{STYLE}</style></head><body>",
    f"<h1>Disparity findings</h1><h2>Summary</h2>{_summary_table(info)}",
  ]
  if "truth" in info:
    parts.append(_truth_section(info["truth"], planted))
  leads = [lead for lead, _ in stories_of(confirmed)]
  parts.append(
    f"<h2>Confirmed findings</h2><p>{esc(len(confirmed))} confirmed findings in {esc(len(leads))} stories. A "
    f"story gathers the findings of one protected group, measure and direction whose cohorts share at least "
    f"half of the smaller cohort's rows; its headline row is the most specific strong one, and the others "
    f"are in the collapsible row under it. Statistics are from the confirmation half; <code>explore_z</code> is "
    f"the exploration half's z. Differences are on the test scale (log ratio for log-scale measures, "
    f"risk difference for rates; with case-mix adjustment, of observed minus expected, or of observed / expected "
    f"for measures on scale <code>ratio</code>).</p>{_stories_table(confirmed)}"
  )
  plots = [
    _img(finding_plot(r), f"{r['cohort']}: {r['group']} vs {r['reference']}, {r['measure']}") for r in leads[:MAX_PLOTS]
  ]
  if len(leads) > MAX_PLOTS:
    plots.append(f"<p>{esc(len(leads) - MAX_PLOTS)} more stories are in findings.csv.</p>")
  parts.append('<div class="plots">' + "".join(plots) + "</div>")
  parts.append(f"<h2>Unconfirmed candidates</h2>{_table(other, ['reason'] + VIEW)}")
  parts.append(f"<h2>Explored tree</h2>{_img(tree_plot(run), 'explored cohorts and the paths to findings')}")
  parts.append("</body></html>")
  return "\n".join(parts)


def _summary_table(info: dict) -> str:
  rows = []
  for key in (
    "data",
    "exploration_rows",
    "confirmation_rows",
    "method",
    "method_note",
    "budget",
    "queries",
    "search_seconds",
    "total_seconds",
    "cohorts_visited",
    "candidates",
    "confirmed",
    "stories",
    "z_screen",
    "q",
    "confirmation",
    "min_relative_diff",
    "max_depth",
    "min_group",
    "adjusted_by",
    "seed",
  ):
    rows.append(f"<tr><th>{esc(key)}</th><td>{esc(info.get(key))}</td></tr>")
  coding = "".join(f"<li>{esc(line)}</li>" for line in info.get("coding", []))
  return f"<table>{''.join(rows)}</table><h3>Coding of the table</h3><ul>{coding}</ul>"


def _truth_section(truth: dict, planted: pd.DataFrame | None) -> str:
  rows = "".join(
    f"<tr><th>{esc(k)}</th>" + "".join(f"<td>{esc(v)}</td>" for v in s.values()) + "</tr>" for k, s in truth.items()
  )
  head = "".join(f"<th>{esc(k)}</th>" for k in next(iter(truth.values())))
  out = f"<h2>Truth score (synthetic data)</h2><table><tr><th></th>{head}</tr>{rows}</table>"
  if planted is not None and len(planted):
    out += _table(planted, list(planted.columns))
  return out
