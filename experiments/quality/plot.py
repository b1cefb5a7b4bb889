"""The quality benchmark's plot: recall against budget, one panel per scenario, one line per method."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from experiments.quality.suite import RECALL_TARGET, SUITE_METHODS, SUITE_SCENARIOS, TRUTHLESS
from experiments.quality.summary import in_order


def plot(summary: list[dict], path: str, *, title: str = "") -> None:
  """recall vs budget (null/confounded: confirmed false findings), written as a PNG to `path`."""
  table = pd.DataFrame([r for r in summary if r["applicable"]])
  if table.empty:
    raise ValueError("nothing to plot: no applicable run")
  scenarios = in_order(table["scenario"], SUITE_SCENARIOS)
  cols = min(4, len(scenarios))
  rows = math.ceil(len(scenarios) / cols)
  fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, scenario in zip(axes.flat, scenarios):
    g = table[table["scenario"] == scenario]
    y = "false_confirmed_mean" if scenario in TRUTHLESS else "recall_mean"
    for method, h in g.groupby("method", sort=False):
      h = h.sort_values("budget_fraction")
      color = f"C{SUITE_METHODS.index(method) % 10}" if method in SUITE_METHODS else None  # same colour per panel
      ax.plot(h["budget_fraction"], h[y], marker="o", label=method, color=color)
    ax.set_xscale("log")
    ax.set_title(scenario)
    ax.set_xlabel("budget / exhaustive queries")
    ax.set_ylabel("confirmed false findings" if scenario in TRUTHLESS else "recall (confirmed)")
    if scenario not in TRUTHLESS:
      ax.set_ylim(-0.03, 1.03)
      ax.axhline(RECALL_TARGET, color="grey", lw=0.5, ls="--")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(scenarios) :]:
    ax.axis("off")
  handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[1]))
  fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, 0.06, 1, 0.96 if title else 1))
  fig.savefig(path, dpi=110)
