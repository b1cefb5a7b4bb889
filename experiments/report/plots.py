"""Plots of the report, drawn on `matplotlib.figure.Figure` (no pyplot, no global backend) as PNG data URIs."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.figure import Figure

import cube_env

MAX_PLOTS = 24  # finding plots in the HTML (all findings are in the JSON and CSV)
MAX_TREE_NODES = 400  # explored-tree nodes drawn (paths to findings always)


def _png(fig: Figure) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(text: str, limit: int = 70) -> str:
  return text if len(text) <= limit else text[: limit - 3] + "..."


def finding_plot(row: dict) -> str:
  """Group vs rest means with 95% intervals, exploration and confirmation halves."""
  fig = Figure(figsize=(4.6, 2.8))
  ax = fig.subplots()
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
  scale = {"log": "geometric mean", "binary": "rate", "ratio": "mean observed / expected"}.get(row.get("scale"), "mean")
  ax.set_ylabel(f"{_short(str(row['measure']), 24)} ({scale})", fontsize=8)
  ax.set_title(_short(f"{row['cohort']} | {row['protected']}"), fontsize=8)
  return _png(fig)


def tree_plot(run: cube_env.Discovery) -> str:
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
  fig = Figure(figsize=(9, 5))
  ax = fig.subplots()
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
