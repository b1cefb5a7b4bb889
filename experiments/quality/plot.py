"""The quality benchmark's plot: one column of panels per family, recall against queries (top) and against wall
seconds (bottom), one line per method in the same colour everywhere; truthless families show the family-wise
error rate instead of recall."""

from __future__ import annotations

import textwrap

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from experiments.quality.suite import RECALL_TARGET, SUITE_METHODS, TRUTHLESS
from experiments.quality.summary import FAMILY_ORDER, in_order

COSTS = (("queries_mean", "queries (mean spent)"), ("seconds_mean", "wall seconds (search + confirmation)"))


# tab20's ten dark hues (tab10's colours) then its ten light ones, so the suite's eleven methods and a few more
# each get their own colour (with tab10's cycle the eleventh, pysubgroup-dfs, took exhaustive's blue).
_PALETTE = tuple(matplotlib.colormaps["tab20"].colors[i] for i in (*range(0, 20, 2), *range(1, 20, 2)))


def colour(method: str, methods: list[str]) -> tuple[float, float, float]:
  """The method's colour: its place in `SUITE_METHODS` (others after them, in `methods` order) in `_PALETTE`, whose
  first ten are tab10's (20 distinct colours, then the cycle repeats)."""
  extra = [m for m in methods if m not in SUITE_METHODS]
  i = SUITE_METHODS.index(method) if method in SUITE_METHODS else len(SUITE_METHODS) + extra.index(method)
  return _PALETTE[i % len(_PALETTE)]


def plot(summary: list[dict], path: str, *, title: str = "") -> Figure:
  """The summary rows' mean recall (truthless families: family-wise error rate) against mean queries and mean
  wall seconds, log x, over the budgets of each (family, method); written as a PNG to `path`, and returned."""
  table = pd.DataFrame([r for r in summary if r.get("kind", "summary") == "summary" and r["applicable"]])
  if table.empty:
    raise ValueError("nothing to plot: no applicable run")
  families = in_order(table["family"], FAMILY_ORDER)
  methods = in_order(table["method"], SUITE_METHODS)
  fig = Figure(figsize=(3.6 * len(families), 6.6))
  axes = fig.subplots(2, len(families), squeeze=False)
  for col, family in enumerate(families):
    g = table[table["family"] == family]
    truthless = family in TRUTHLESS
    y = "family_wise_error_rate" if truthless else "recall_mean"
    for row, (x, xlabel) in enumerate(COSTS):
      ax = axes[row, col]
      for method, h in g.groupby("method", sort=False):
        h = h.sort_values(["budget_fraction", "budget"])
        xs, ys = h.get(x, pd.Series(np.nan, index=h.index)).to_numpy(float), h[y].to_numpy(float)
        keep = np.isfinite(xs) & (xs > 0) & np.isfinite(ys)
        ax.plot(xs[keep], ys[keep], marker="o", ms=3, label=method, color=colour(method, methods))
      ax.set_xscale("log")
      ax.set_ylim(-0.03, 1.03)
      ax.axhline(0.05 if truthless else RECALL_TARGET, color="grey", lw=0.5, ls="--")
      ax.set_xlabel(xlabel)
      ax.set_ylabel("family-wise error rate" if truthless else "recall (confirmed)")
      ax.grid(alpha=0.3)
      if row == 0:
        ax.set_title(family)
  handles = [Line2D([], [], marker="o", ms=3, color=colour(m, methods), label=m) for m in methods]
  # As many legend columns (up to 9) as the figure's width holds, and room below the panels for its rows; the title
  # wrapped to the width (one family's 3.6 inches cut off a legend of one row at both edges: an audit).
  legend = None
  for ncol in range(min(9, len(handles)), 0, -1):
    if legend is not None:
      legend.remove()
    legend = fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8)
    if legend.get_window_extent().width <= 0.98 * fig.bbox.width:
      break
  if title:  # tight_layout keeps the panels below it
    fig.suptitle(textwrap.fill(title, width=max(30, int(13 * fig.get_figwidth()))), fontsize=10)
  fig.tight_layout(rect=(0, (legend.get_window_extent().height + 4) / fig.bbox.height, 1, 1))
  fig.savefig(path, dpi=110)
  return fig


def worlds_label(summary: list[dict]) -> str:
  """'mean over N worlds per family' ('N-M' where they differ) of the summary rows a plot draws: the worlds of every
  call in an --out file, so not a call's own --seeds (a plot of 5 worlds said "1 seed": an audit)."""
  counts = sorted({int(r["seeds"]) for r in summary if r.get("kind", "summary") == "summary" and r["applicable"]})
  if not counts:
    return ""
  n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
  return f"mean over {n} world{'' if counts[-1] == 1 else 's'} per family"
