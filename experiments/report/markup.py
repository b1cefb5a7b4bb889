"""The HTML report: one self-contained file of well-formed XHTML-style markup.

Plots are base64 PNGs (`experiments.report.plots`); every value that comes
from the data (category names come from user files) is HTML-escaped.
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
  parts.append(
    f"<h2>Confirmed findings</h2><p>Statistics are from the confirmation half; <code>explore_z</code> is "
    f"the exploration half's z. Differences are on the test scale (log ratio for log-scale measures, "
    f"risk difference for rates).</p>{_table(confirmed, VIEW)}"
  )
  plots = [
    _img(finding_plot(r), f"{r['cohort']}: {r['group']} vs {r['reference']}, {r['measure']}")
    for r in confirmed.head(MAX_PLOTS).to_dict("records")
  ]
  if len(confirmed) > MAX_PLOTS:
    plots.append(f"<p>{esc(len(confirmed) - MAX_PLOTS)} more findings are in findings.csv.</p>")
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
    "z_screen",
    "q",
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
