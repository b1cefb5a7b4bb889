"""The findings report of a discovery run: findings.json, findings.csv and report.html.

The HTML is one self-contained file (plots are base64 PNGs, drawn with
matplotlib's Agg backend) written as well-formed XHTML-style markup; every
value that comes from the data (category names come from user files) is
HTML-escaped. Counts below `min_group` never reach the report: the tables
carry None there (`cube_env.cohorts.suppress`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cube_env.cohorts import redact_counts
from cube_env.discovery import Discovery

CSV_COLUMNS = (
  "confirmed",
  "reason",
  "cohort",
  "protected",
  "group",
  "reference",
  "measure",
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
  "relative_diff",
  "z",
  "p_value",
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
MAX_PLOTS = 24  # finding plots in the HTML (all findings are in the JSON and CSV)
MAX_TREE_NODES = 400  # explored-tree nodes drawn (paths to findings always)


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


def findings_table(run: Discovery) -> pd.DataFrame:
  """The findings in report order and columns (CSV_COLUMNS present in the run)."""
  f = run.findings
  cols = [c for c in CSV_COLUMNS if c in f.columns]
  return f[cols].copy()


def summary(run: Discovery, *, source: str, truth: dict | None = None) -> dict:
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
    "z_screen": round(run.search.z_screen, 3),
    "q": c.q,
    "min_relative_diff": c.min_relative_diff,
    "max_depth": c.max_depth,
    "min_group": c.min_group,
    "adjusted_by": list(c.adjust),
    "seed": c.seed,
    "method_note": run.search.note,
    "coding": [redact_counts(line, c.min_group) for line in run.halves.summary],
  }
  if truth is not None:
    out["truth"] = truth
  return _clean(out)


def write_report(
  run: Discovery, out_dir: str, *, source: str, truth: dict | None = None, planted: pd.DataFrame | None = None
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
  records = [_clean(r) for r in table.to_dict("records")]
  with open(paths["findings.json"], "w", encoding="utf-8") as fh:
    json.dump({"summary": info, "findings": records}, fh, indent=1, allow_nan=False)
  csv = table.copy()
  if "filters" in csv.columns:
    csv["filters"] = [json.dumps(_clean(f)) for f in csv["filters"]]
  csv.to_csv(paths["findings.csv"], index=False)
  with open(paths["report.html"], "w", encoding="utf-8") as fh:
    fh.write(render_html(run, info, table, planted=planted))
  return paths


# -- HTML ---------------------------------------------------------------------


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


def _png(fig) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
  plt.close(fig)
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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


def render_html(run: Discovery, info: dict, table: pd.DataFrame, *, planted: pd.DataFrame | None = None) -> str:
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
    _img(_finding_plot(r), f"{r['cohort']}: {r['group']} vs {r['reference']}, {r['measure']}")
    for r in confirmed.head(MAX_PLOTS).to_dict("records")
  ]
  if len(confirmed) > MAX_PLOTS:
    plots.append(f"<p>{esc(len(confirmed) - MAX_PLOTS)} more findings are in findings.csv.</p>")
  parts.append('<div class="plots">' + "".join(plots) + "</div>")
  parts.append(f"<h2>Unconfirmed candidates</h2>{_table(other, ['reason'] + VIEW)}")
  parts.append(f"<h2>Explored tree</h2>{_img(_tree_plot(run), 'explored cohorts and the paths to findings')}")
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
  head = "".join(f"<th>{esc(k)}</th>" for k in next(iter(truth.values())).keys())
  out = f"<h2>Truth score (synthetic data)</h2><table><tr><th></th>{head}</tr>{rows}</table>"
  if planted is not None and len(planted):
    out += _table(planted, list(planted.columns))
  return out


# -- plots --------------------------------------------------------------------


def _short(text: str, limit: int = 70) -> str:
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _finding_plot(row: dict) -> str:
  """Group vs rest means with 95% intervals, exploration and confirmation halves."""
  fig, ax = plt.subplots(figsize=(4.6, 2.8))
  sides = [("group", "explore_"), ("rest", "explore_"), ("group", ""), ("rest", "")]
  for i, (side, prefix) in enumerate(sides):
    mean = row.get(f"{prefix}mean_{side}")
    lo, hi = row.get(f"{prefix}{side}_ci_low"), row.get(f"{prefix}{side}_ci_high")
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
      continue
    err = None
    if lo is not None and hi is not None and np.isfinite([lo, hi]).all():
      err = [[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]]
    ax.errorbar([i], [mean], yerr=err, fmt="o", color="C3" if side == "group" else "C0", capsize=4)
  ax.set_xticks(
    range(4),
    [
      f"{_short(str(row['group']), 14)}\nexplore",
      f"{_short(str(row['reference']), 14)}\nexplore",
      f"{_short(str(row['group']), 14)}\nconfirm",
      f"{_short(str(row['reference']), 14)}\nconfirm",
    ],
    fontsize=7,
  )
  ax.axvline(1.5, color="#bbb", lw=0.8)
  scale = {"log": "geometric mean", "binary": "rate"}.get(row.get("scale"), "mean")
  ax.set_ylabel(f"{_short(str(row['measure']), 24)} ({scale})", fontsize=8)
  ax.set_title(_short(f"{row['cohort']} | {row['protected']}"), fontsize=8)
  return _png(fig)


def _tree_plot(run: Discovery) -> str:
  """Visited cohorts by depth (query order along y); edges to the cohort each was reached from; paths to findings red."""
  visits = run.search.visits
  confirmed_q = set(run.findings.loc[run.findings["confirmed"].astype(bool), "query"]) if len(run.findings) else set()
  cand_q = set(run.findings["query"]) if len(run.findings) else set()
  on_path = set()
  parents = visits["parent"].to_numpy()
  for q in cand_q:
    q = int(q)
    while q >= 0 and q not in on_path:
      on_path.add(q)
      q = int(parents[q])
  shown = sorted(on_path | set(range(min(len(visits), MAX_TREE_NODES))))
  depth = visits["depth"].to_numpy()
  ypos = {}
  for d in range(int(depth.max()) + 1 if len(visits) else 1):
    level = [q for q in shown if depth[q] == d]
    for i, q in enumerate(level):
      ypos[q] = (i + 0.5) / max(len(level), 1)
  fig, ax = plt.subplots(figsize=(9, 5))
  for q in shown:
    p = int(parents[q])
    if p in ypos:
      red = q in on_path and p in on_path
      ax.plot(
        [depth[p], depth[q]],
        [ypos[p], ypos[q]],
        color="C3" if red else "#ccc",
        lw=1.4 if red else 0.4,
        zorder=2 if red else 1,
      )
  xs = [depth[q] for q in shown]
  ys = [ypos[q] for q in shown]
  colors = ["C3" if q in confirmed_q else ("C1" if q in cand_q else "#888") for q in shown]
  ax.scatter(xs, ys, s=10, c=colors, zorder=3)
  for q in sorted(cand_q):
    ax.annotate(
      _short(str(visits["cohort"].iloc[int(q)]), 45),
      (depth[int(q)], ypos[int(q)]),
      fontsize=6,
      xytext=(4, 2),
      textcoords="offset points",
    )
  hidden = len(visits) - len(shown)
  ax.set_xlabel("depth (filters)")
  ax.set_xticks(range(int(max(xs, default=0)) + 1))
  ax.set_yticks([])
  ax.set_title(
    f"{len(visits)} cohorts visited"
    + (f" ({hidden} not drawn)" if hidden > 0 else "")
    + "; red: confirmed, orange: unconfirmed candidate",
    fontsize=9,
  )
  ax.set_xlim(-0.2, max(xs, default=0) + 0.8)
  return _png(fig)
