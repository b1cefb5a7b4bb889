"""Tables of the quality benchmark (issue 17): budget to the recall target, recall at the headline budgets, paired
differences and family-wise error; as data frames of text cells and as markdown pipe tables (no tabulate).

Cells show recall, queries, seconds and rates, never a count of rows or of a cohort.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from experiments.quality.suite import HEURISTICS, RECALL_TARGET, SUITE_METHODS, TRUTHLESS
from experiments.quality.summary import FAMILY_ORDER, in_order

HEADLINE_FRACTIONS = (0.01, 0.05)  # of enumeration's queries, where enumeration is feasible
HEADLINE_QUERIES = (300, 1000, 3000)  # on the fixed-budget families (paired differences)


def markdown(table: pd.DataFrame, *, index: bool = False) -> str:
  """A pipe table."""
  frame = table.reset_index() if index else table
  cols = [str(c) for c in frame.columns]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
  return "\n".join(lines)


def budget_label(row: dict | pd.Series) -> str:
  """'1%' (a fraction of enumeration's queries) or '300 q' (a fixed budget)."""
  if row["budget_kind"] == "fixed":
    return f"{row['budget']:.0f} q"
  fraction = row["nominal_fraction"]
  fraction = row["budget_fraction"] if fraction is None or pd.isna(fraction) else fraction
  return f"{100 * fraction:.3g}%"


def seconds(s: float) -> str:
  """Wall seconds to three significant digits, without an exponent."""
  return f"{s:.0f} s" if s >= 100 else f"{s:.3g} s"


def headline(summary: list[dict], *, target: float = RECALL_TARGET) -> pd.DataFrame:
  """Per method (rows) and family with planted effects (columns): the smallest measured budget whose mean recall
  over worlds is >= `target`, as 'fraction = mean queries allowed, mean wall seconds' ('300 q, 2.1 s' on a
  fixed-budget family); '> largest (best recall)' when none reaches it, 'n/a' when the method cannot run there."""
  table = _truth(pd.DataFrame(summary))
  if table.empty or "recall_mean" not in table:
    return pd.DataFrame()
  cells = {}
  for (family, method), g in table.groupby(["family", "method"], sort=False):
    g = g.sort_values(["budget_fraction", "budget"])
    ok = g[g["applicable"] & g["recall_mean"].notna()]
    if not g["applicable"].any():
      cells[(method, family)] = "n/a"
    elif not len(ok):
      cells[(method, family)] = "-"
    elif (ok["recall_mean"] >= target).any():
      hit = ok[ok["recall_mean"] >= target].iloc[0]
      where = f"{budget_label(hit)} = {hit['budget']:.0f} q" if hit["budget_kind"] != "fixed" else budget_label(hit)
      cells[(method, family)] = f"{where}, {seconds(hit['seconds_mean'])}"
    else:
      cells[(method, family)] = f"> {budget_label(g.iloc[-1])} (best {ok['recall_mean'].max():.2f})"
  families = in_order(table["family"], FAMILY_ORDER)
  methods = in_order(table["method"], SUITE_METHODS)
  return pd.DataFrame(
    [[cells.get((m, f), "") for f in families] for m in methods],
    columns=families,
    index=pd.Index(methods, name="method"),
  )


def at_budgets(summary: list[dict], *, fractions: tuple[float, ...] = HEADLINE_FRACTIONS) -> pd.DataFrame:
  """Mean recall over worlds with its bootstrap 95% interval, 'mean [low, high]', per (family, budget) (rows:
  `fractions` of enumeration's queries, every budget of a fixed-budget family) and method (columns)."""
  return _grid(
    _truth(pd.DataFrame(summary)),
    lambda r: _interval(r["recall_mean"], r["recall_low"], r["recall_high"]),
    fractions=fractions,
    queries=None,
  )


def fwer_table(summary: list[dict]) -> pd.DataFrame:
  """Family-wise error rate on the truthless families (worlds with any confirmed finding / worlds) with its
  Clopper-Pearson 95% interval, per (family, budget) and method."""
  table = pd.DataFrame(summary)
  if table.empty:
    return pd.DataFrame()
  table = table[table["family"].isin(TRUTHLESS)]
  return _grid(
    table, lambda r: _interval(r["family_wise_error_rate"], r["fwer_low"], r["fwer_high"]), fractions=None, queries=None
  )


def paired_table(
  rows: list[dict],
  *,
  fractions: tuple[float, ...] = HEADLINE_FRACTIONS,
  queries: tuple[int, ...] = HEADLINE_QUERIES,
) -> pd.DataFrame:
  """`summary.paired` rows as 'diff [low, high]' per (family, budget) and method, with the `leader` (highest
  mean recall; its difference is over the runner-up, every other method's is over the best other method)."""
  table = pd.DataFrame(rows)
  if table.empty:
    return pd.DataFrame()
  grid = _grid(
    table,
    lambda r: _interval(r["diff_mean"], r["diff_low"], r["diff_high"], sign=True),
    fractions=fractions,
    queries=queries,
  )
  leaders = table.sort_values("recall_mean", ascending=False, kind="stable").drop_duplicates(["family", "budget_key"])
  leader = {(r.family, budget_label(r._asdict())): r.method for r in leaders.itertuples()}
  grid.insert(0, "leader", [leader.get(i, "") for i in grid.index])
  return grid


def versus_table(
  rows: list[dict],
  *,
  fractions: tuple[float, ...] = HEADLINE_FRACTIONS,
  queries: tuple[int, ...] = HEADLINE_QUERIES,
) -> pd.DataFrame:
  """`summary.paired`'s `versus` rows (issue 18's yardstick) as 'diff [low, high] (n)', n the worlds paired, and
  'n of N' where N - n worlds of the method were left out because a heuristic had not run there (`worlds_dropped`)."""

  def cell(r: pd.Series) -> str:
    n, dropped = int(r["seeds"]), int(r.get("worlds_dropped", 0) or 0)
    worlds = f"{n} of {n + dropped}" if dropped else f"{n}"
    return f"{_interval(r['diff_mean'], r['diff_low'], r['diff_high'], sign=True)} ({worlds})"

  table = pd.DataFrame(rows)
  return pd.DataFrame() if table.empty else _grid(table, cell, fractions=fractions, queries=queries)


def _truth(table: pd.DataFrame) -> pd.DataFrame:
  return table if table.empty else table[~table["family"].isin(TRUTHLESS)]


def _interval(mean: float | None, low: float | None, high: float | None, *, sign: bool = False) -> str:
  if mean is None or pd.isna(mean):
    return "-"
  f = "+.2f" if sign else ".2f"
  return f"{mean:{f}} [{low:{f}}, {high:{f}}]" if low is not None and pd.notna(low) else f"{mean:{f}}"


def _grid(
  table: pd.DataFrame,
  cell: Callable[[pd.Series], str],
  *,
  fractions: tuple[float, ...] | None,
  queries: tuple[int, ...] | None,
) -> pd.DataFrame:
  """Rows (family, budget) in family then budget order, one column per method; of a family's budgets those with
  a nominal fraction in `fractions` (fraction budgets) or a query count in `queries` (fixed budgets; None: all of
  either), or all when none is; 'n/a' where the method cannot run, '-' where it did not run."""
  if table.empty:
    return pd.DataFrame()
  families = in_order(table["family"], FAMILY_ORDER)
  methods = in_order(table["method"], SUITE_METHODS)
  out, index = [], []
  for family in families:
    g = table[table["family"] == family]
    keys = g.drop_duplicates("budget_key").sort_values(["budget_fraction", "budget"])
    chosen = keys[[_chosen(r, fractions, queries) for _, r in keys.iterrows()]]
    for _, k in (chosen if len(chosen) else keys).iterrows():
      h = g[g["budget_key"] == k["budget_key"]].set_index("method")
      index.append((family, budget_label(k)))
      out.append(
        ["-" if m not in h.index else cell(h.loc[m]) if h.loc[m].get("applicable", True) else "n/a" for m in methods]
      )
  return pd.DataFrame(out, columns=methods, index=pd.MultiIndex.from_tuples(index, names=["family", "budget"]))


def _chosen(row: pd.Series, fractions: tuple[float, ...] | None, queries: tuple[int, ...] | None) -> bool:
  if row["budget_kind"] == "fixed":
    return queries is None or any(math.isclose(row["budget"], q) for q in queries)
  nominal = row["nominal_fraction"]
  return fractions is None or (nominal is not None and pd.notna(nominal) and bool(np.isclose(fractions, nominal).any()))


def headline_tables(
  summary: list[dict], *, suite_name: str, wall_s: float, calls: int, device_kind: str, pairs: list[dict] = ()
) -> str:
  """The tables the `quality` command logs (markdown): budget to the recall target, recall at the headline
  budgets, the paired differences (from `pairs`, the `summary.paired` rows the command made: kind `paired`, and
  `versus` for the learned search against the best heuristic) and the family-wise error rate; the heading names the
  split the summary rows are of."""
  by_kind = {k: [p for p in pairs if p.get("kind") == k] for k in ("paired", "versus")}
  tables = {
    f"budget to mean recall {RECALL_TARGET} of the planted effects (fraction of enumeration's queries = mean "
    "queries, mean wall seconds)": headline(summary),
    "recall of the planted effects": at_budgets(summary),
    "recall minus the best other method's, paired per world (leader: over the runner-up)": (
      paired_table(by_kind["paired"])
    ),
    "family-wise error rate (worlds with any confirmed finding)": fwer_table(summary),
  }
  if by_kind["versus"]:
    learned = " and ".join(sorted({p["method"] for p in by_kind["versus"]}))
    title = (
      f"{learned} minus the best of {', '.join(HEURISTICS)}, paired per world (issue 18's yardstick; in parentheses the "
      "worlds where every heuristic ran)"
    )
    tables[title] = versus_table(by_kind["versus"])
  splits = {r.get("split", "eval") for r in summary}  # a `--split train` call's rows are of training worlds
  worlds = " and ".join(sorted(("training" if s == "train" else "evaluation") for s in splits)) or "evaluation"
  head = (
    f"\nsuite {suite_name}, {wall_s / 60:.1f} min in {calls} call(s) on {device_kind}; means over {worlds} "
    "worlds, [95% interval]: bootstrap over worlds, Clopper-Pearson for rates"
  )
  return "\n\n".join([head] + [f"{name}:\n{markdown(t, index=True)}" for name, t in tables.items() if not t.empty])
