"""The HTML report: one self-contained file of well-formed XHTML-style markup.

Plots are base64 PNGs (`experiments.report.plots`); every value that comes
from the data (category names come from user files) is HTML-escaped.
It opens with each confirmed finding in one plain sentence (`finding_sentence`).
Confirmed findings are shown story by story (`cube_env.discovery.stories`):
one row per story, its lead, with the story's other findings in a collapsible
table in that row; the plots are of the leads. Counts print whole ("11,428"),
p-values under `P_FLOOR` as "< 1e-300" (`cell`), as the JSON and CSV write them (`files.floored_p`); other numbers
they keep raw.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import numpy as np
import pandas as pd

import cube_env
from cube_env.discovery.pipeline import warnings_in
from cube_env.environment.stats import Z_MAX
from experiments.report.plots import MAX_PLOTS, finding_plot, hidden_note, shown_size, tree_plot


def plural(n: int, noun: str, nouns: str | None = None) -> str:
  """`n` and its noun: "1 story", "2 stories" (`nouns` defaults to `noun` + "s")."""
  return f"{n} {noun if n == 1 else nouns or noun + 's'}"


# Columns that count rows (or events): shown whole, with thousands separators.
COUNT_COLUMNS = frozenset(
  {
    "cohort_rows",
    "n_group",
    "n_rest",
    "explore_cohort_rows",
    "explore_n_group",
    "explore_n_rest",
  }
)
SUMMARY_COUNTS = frozenset(
  {
    "exploration_rows",
    "confirmation_rows",
    "budget",
    "queries",
    "cohorts_visited",
    "candidates",
    "confirmed",
    "stories",
  }
)
P_COLUMNS = frozenset({"p_value", "p_confirm", "p_adjusted", "explore_p_value"})
P_FLOOR = 1e-300  # a p-value below it (one that underflowed to 0.0 included) shows as "< 1e-300"


def _blank(value: Any) -> bool:
  """True for a value shown as a dash: None, NaN, inf, pandas' NA."""
  if value is None or value is pd.NA:
    return True
  return isinstance(value, (float, np.floating)) and not math.isfinite(value)


def p_text(p: float, digits: int = 4) -> str:
  """A p-value to `digits` significant digits, "< 1e-300" below `P_FLOOR` (not the 0.0 of an underflow)."""
  return f"< {P_FLOOR:.0e}" if p < P_FLOOR else f"{p:.{digits}g}"


Z_COLUMNS = frozenset({"z", "explore_z"})


def z_text(z: float, digits: int | None = None) -> str:
  """A z statistic as the report and console show it: at the statistics' cap (`Z_MAX`, 40; where the evidence is
  unbounded or p is below float64's range) "≥ 40" or "≤ -40", since the z may be larger; otherwise as is, or to
  `digits` significant digits."""
  if abs(z) >= Z_MAX:
    return f"≥ {Z_MAX:g}" if z > 0 else f"≤ -{Z_MAX:g}"
  text = number_text(z) if digits is None else f"{z:.{digits}g}"
  return text if abs(float(text)) < Z_MAX else f"{z:.6g}"  # 39.97 is not shown as the cap's 40


def number_text(value: float) -> str:
  """A number as the report prints it: 4 significant digits, whole (thousands separated) from 10,000 to 1e15."""
  v = float(value)
  return f"{v:,.0f}" if 1e4 <= abs(v) < 1e15 else f"{v:.4g}"


# Not XML characters, and the bidirectional controls (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069), which
# turn the text after them around: a category holding U+202E showed the report's own "was 40% higher ... confirmed
# on held-out rows" backwards, and 'exe.txt' as 'txt.exe' (a security audit).
_UNPRINTABLE = re.compile(
  r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
  """`text` with each control character (but tab and line breaks), lone surrogate and bidirectional control written
  as its escape, '\\x1b', '\\u202e' (a report audit: an ESC in a category made the report unparseable as XML and
  reached the terminal raw)."""
  return _UNPRINTABLE.sub(lambda m: ascii(m.group(0))[1:-1], text)


def esc(value: Any) -> str:
  """Escaped text of a value (floats by `number_text`; None as a dash; control characters by `printable`)."""
  if _blank(value):
    return "-"
  if isinstance(value, (float, np.floating)):
    return html.escape(number_text(value))
  return html.escape(printable(str(value)), quote=True)


def cell(column: str, value: Any) -> str:
  """Escaped text of `column`'s `value`: a count whole ("11,428"), a p-value by `p_text`, anything else by `esc`."""
  if _blank(value) or isinstance(value, (bool, np.bool_)):
    return esc(value)
  if column in COUNT_COLUMNS:
    return f"{round(float(value)):,}"
  if column in P_COLUMNS:
    return html.escape(p_text(float(value)))
  if column in Z_COLUMNS:
    return html.escape(z_text(float(value)))
  if column == "hidden":  # a confirmation half's reason once, not again as the exploration half's (`_once`)
    return esc(_once(str(value)))
  return esc(value)


# Columns the printed tables leave out (findings.csv keeps them): an A4 page has no room for all of them (a print
# audit: a cell's number broke into single characters); a print-only line under each table's caption names them.
# explore_z stays: some candidates have no other z (a review).
PRINT_HIDDEN = ("diff", "ci_low", "ci_high", "p_value", "p_confirm", "path")
BREAK_AFTER = 8  # a header longer than this may break after each "_" (n_group is no wider than its counts)


def _class(column: Any) -> str:
  """A column's class, "c-" and its name (characters a class cannot hold as "-"): the print CSS hides by it."""
  return "c-" + re.sub(r"[^A-Za-z0-9_-]", "-", str(column))


def _th(column: Any) -> str:
  """A column's header cell: scoped, classed (`_class`), and breakable after each "_" when long (`BREAK_AFTER`)."""
  text = esc(column)
  if len(str(column)) > BREAK_AFTER:
    text = text.replace("_", "_<wbr/>")
  return f'<th scope="col" class="{_class(column)}">{text}</th>'


def _td(column: Any, value: Any) -> str:
  """`column`'s cell of `value` (`cell`), classed "num" too when a number: printed, a number never wraps."""
  number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
  return f'<td class="{_class(column)}{" num" if number else ""}">{cell(column, value)}</td>'


def _boxed(caption: str, cols: list, head: str, body: str, table_class: str = "") -> str:
  """A table of `cols` (`head` its header cells, `body` its rows) captioned, in a scrolling box that is a region
  named by the caption, which a keyboard can scroll (WCAG 2.1.1); the caption names, in print only, the columns a
  print leaves out (`PRINT_HIDDEN`)."""
  left_out = [c for c in cols if c in PRINT_HIDDEN]
  note = (
    f'<span class="print-only">; printed without {esc(", ".join(left_out))} (in findings.csv)</span>'
    if left_out
    else ""
  )
  classed = f' class="{table_class}"' if table_class else ""
  return (
    f'<div class="wide" role="region" tabindex="0" aria-label="{esc(caption)}"><table{classed}>'
    f"<caption>{esc(caption)}{note}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
  )


def _table(df: pd.DataFrame, columns: list[str], caption: str) -> str:
  cols = [c for c in columns if c in df.columns]
  head = "".join(_th(c) for c in cols)
  body = "".join(
    "<tr>" + "".join(_td(c, v) for c, v in zip(cols, row)) + "</tr>" for row in df[cols].itertuples(index=False)
  )
  return _boxed(caption, cols, head, body)


def _img(uri: str, alt: str) -> str:
  """An image of a PNG data URI, at its size on screen (`shown_size`: its pixels are for print)."""
  size = shown_size(uri)
  dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
  return f'<img src="{uri}" alt="{esc(alt)}"{dims}/>'


STYLE = (
  "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:85%}"
  "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}.plots img{margin:4px}"
  "img{max-width:100%;height:auto}caption{text-align:left;font-weight:bold;padding:2px 0}"
  "details table{font-size:100%;margin-top:4px}summary{cursor:pointer;white-space:nowrap}"
  # Tables wider than the page scroll inside it (a report audit: 1,956 px at a 1,280 px window, z and p off-screen);
  # printed (A4 landscape, the page's margins the body's), they wrap instead, between words, a number never, less the
  # columns of `PRINT_HIDDEN` (a print audit: "7.733e-15" broke into single characters).
  # A cohort's text may break anywhere: one long value without a space pushed the last columns off the page.
  ".wide{overflow-x:auto;max-width:100%}.print-only{display:none}@page{size:landscape}"
  "@media print{body{margin:0;max-width:none}.wide{overflow-x:visible}table{font-size:70%}"
  "td,th{word-break:normal;overflow-wrap:break-word}td.num{white-space:nowrap}td.c-cohort{overflow-wrap:anywhere}"
  + ",".join(f".{_class(c)}" for c in PRINT_HIDDEN)
  + "{display:none}.print-only{display:inline}}"
  # A closed story's other findings print too (a print audit: closed <details> did not print).
  "@media print{details::details-content{content-visibility:visible;display:contents}}"
  ".warn{border:2px solid #b35900;background:#fff4e5;padding:0 1em;margin:1em 0}"
  # On screen too, a sentence or note may break inside a long word (a report audit: a 266-character value without a
  # space widened the plain-words list past the window and cut its sentence off).
  "li,p{overflow-wrap:anywhere}"
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
  "relative_ci_low",
  "relative_ci_high",
  "smd",  # where relative_diff is blank (a measure with values below 0): the rule's standard deviations
  "z",
  "p_value",
  "p_confirm",
  "p_adjusted",
  "explore_z",
  "path",
  "hidden",  # why the small-cell rule blanked numbers (a report audit: dashes with no reason in the HTML)
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
  "relative_ci_low",
  "relative_ci_high",
  "z",
  "p_adjusted",
  "hidden",
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


def _members_row(members: pd.DataFrame, width: int, story) -> str:
  """The row under a lead: its story's other findings in a collapsible table (nothing when it has none), named by
  the story's number (a review: every story's region had one name)."""
  if not len(members):
    return ""
  n = len(members)
  label = f"{n} more finding{'s' if n > 1 else ''} of this story"
  table = _table(members, MEMBER_VIEW, f"Other findings of story {story}")
  details = f"<details><summary>{esc(label)}</summary>{table}</details>"
  return f'<tr class="members"><td colspan="{width}">{details}</td></tr>'


def _stories_table(confirmed: pd.DataFrame) -> str:
  """One headline row per story (its lead's `VIEW` values), each followed by a row of its other findings."""
  cols = [c for c in VIEW if c in confirmed.columns]
  head = "".join(_th(c) for c in ["story", *cols])
  body = []
  for k, (lead, members) in enumerate(stories_of(confirmed)):
    story = lead.get("story", k)
    cells = _td("story", story) + "".join(_td(c, lead[c]) for c in cols)
    body.append(f"<tr>{cells}</tr>{_members_row(members, 1 + len(cols), story)}")
  return _boxed("Confirmed findings (one row per story)", cols, head, "".join(body), "stories")


def _scales_note(
  table: pd.DataFrame, *, favorable: list | tuple = (), signed: list | tuple = (), adjusted: bool = False
) -> str:
  """What scale each kind of difference column is on (the interval of `relative_diff` when the table has one), and
  where `relative_diff` is of other quantities: a `favorable` measure's (rates of not having it) and a `signed`
  one's (none; a report audit: both read as the opposite or as nonsense)."""
  relative = (
    " and <code>relative_ci_low</code> to <code>relative_ci_high</code> its 95% interval on that same scale"
    if {"relative_ci_low", "relative_ci_high"} <= set(table.columns)
    else ""
  )
  measures = set(table["measure"]) if "measure" in table.columns else set()
  shown_favorable = [m for m in favorable if m in measures]
  shown_signed = [m for m in signed if m in measures]
  extra = ""
  if shown_favorable:
    names = ", ".join(f"<code>{esc(m)}</code>" for m in shown_favorable)
    extra += (
      f" For a measure whose event is the good outcome ({names}), <code>relative_diff</code> compares the rates of "
      "not having it: it is below 0 where the group has the event more often."
    )
  if shown_signed:
    names = ", ".join(f"<code>{esc(m)}</code>" for m in shown_signed)
    extra += (
      f" A measure that takes values below 0 ({names}) has no <code>relative_diff</code> (a ratio of its means "
      "means nothing); its findings must differ by at least the summary's <code>min_relative_diff</code> in "
      "standard deviations instead: <code>smd</code>, the difference of means over the root of the two sides' average "
      "variance (for a rate, Cohen's h)."
    )
  return (
    "<code>diff</code> and its 95% interval <code>ci_low</code> to <code>ci_high</code> are on the test scale, not "
    "the natural one: the log of the ratio of geometric means for log-scale measures, the risk difference for "
    "rates, the difference of means otherwise (with case-mix adjustment, of observed minus expected, or of "
    "observed / expected for measures on scale <code>ratio</code>). <code>relative_diff</code> is on the natural "
    f"scale (group over rest, minus 1: 0.5 is 50% higher){relative}.{extra}{_adjusted_relative(adjusted)}"
  )


def _adjusted_relative(adjusted: bool) -> str:
  """How an adjusted run's `relative_diff` is made where observed minus expected is tested (scale linear: rates and
  means): not from the two excess rates shown (a report audit: 0.0564 over -0.0058 less 1 is not its 96%)."""
  if not adjusted:
    return ""
  return (
    " With case-mix adjustment, a rate's or a linear measure's <code>relative_diff</code> is the group's excess "
    "over expected less the rest's, divided by the rest's observed rate or mean (so 0.5 is a gap of half the rest's "
    "own level); log-scale and ratio measures keep group over rest, minus 1, of observed / expected."
  )


# What a finding compares, by scale: (the sentence's subject, the shown means' name, their name with adjustment).
SUBJECTS = {
  "log": ("the geometric mean of {m}", "geometric means", "geometric means of observed / expected"),
  "binary": ("the rate of {m}", "rates", "excess rates of {m} over expected"),
  "ratio": ("the mean of {m}", "means", "means of observed / expected"),
  "linear": ("the mean of {m}", "means", "means of observed minus expected"),
}


def _percent_ci(rel: float, low: Any, high: Any) -> str:
  """ " (95% CI 41% to 60%)" beside a relative difference `rel` (magnitudes when the interval is on its side of 0)."""
  if _blank(low) or _blank(high):
    return ""
  low, high = float(low), float(high)
  if rel >= 0 and low >= 0:
    return f" (95% CI {low:.0%} to {high:.0%})"
  if rel < 0 and high <= 0:
    return f" (95% CI {-high:.0%} to {-low:.0%})"
  return f" (95% CI of the relative difference {low:+.0%} to {high:+.0%})"


def finding_sentence(
  row: dict, *, adjusted_by: list | tuple = (), favorable: list | tuple = (), binary: list | tuple = ()
) -> str:
  """One confirmed finding in plain words (plain text), from numbers the report shows elsewhere, counts never.

  The relative difference (`relative_diff`, with `relative_ci_low` to
  `relative_ci_high` where the row has them) as a percentage and the two
  sides' means as the tables print them, named for the measure's scale
  (geometric means for log-scale measures, rates for binary ones); a
  favorable binary measure's relative difference is of its non-event rates.
  A finding whose numbers the small-cell rule blanked says so instead, with its direction (`direction`, which the
  rule leaves: `cube_env.shown_findings`) and why (`hidden`). `binary`: the binary measures, which case-mix adjustment
  tests as excess rates (their rows' scale is then "linear"), so that they still read as rates.
  """
  subject, means, adjusted_means = SUBJECTS[_scale(row, adjusted=bool(adjusted_by), binary=binary)]
  m = str(row["measure"])
  flip = m in favorable  # a favorable measure is binary (scale "linear" once adjusted): its non-event rates
  subject = ("the rate of no {m}" if flip else subject).format(m=m)
  whole = row["cohort"] == cube_env.cohort_label({})
  where, rest = ("the whole table", "the rest of the table") if whole else (row["cohort"], "the rest of that cohort")
  if row.get("reference", "rest") != "rest":
    rest = f"{row['protected']}={row['reference']}"
  head = f"In {where}, {subject} for {row['protected']}={row['group']}"
  rel, g, r = row.get("relative_diff"), row.get("mean_group"), row.get("mean_rest")
  adjusted = f" after adjustment for case mix ({', '.join(adjusted_by)})" if adjusted_by else ""
  # The gap's direction (`direction`, which the small-cell rule leaves; a findings table without it: explore_z's
  # sign, which confirmation kept), of the events for a favorable measure, whose rates of no event are the subject.
  z = row.get("explore_z")
  sign = {"higher": 1.0, "lower": -1.0}.get(row.get("direction"), 0.0 if _blank(z) else float(np.sign(float(z))))
  sign *= -1.0 if flip else 1.0
  how = "differed from" if sign == 0 else f"was {'higher' if sign > 0 else 'lower'} than for"
  if _blank(g) or _blank(r):
    why = "" if _blank(row.get("hidden")) else f" because {_why_hidden(str(row['hidden']))}"
    return (
      f"{head} {how} {rest}{adjusted}; its numbers are hidden by the small-cell rule{why}; confirmed on held-out rows."
    )
  if flip:
    shown = f"excess rates of {m} over expected" if adjusted_by else f"rates of {m}"
  else:
    shown = adjusted_means.format(m=m) if adjusted_by else means
  if _blank(rel):  # no relative difference (a measure with values below 0, or no ratio): the means, the smd
    smd = "" if _blank(row.get("smd")) else f", {abs(float(row['smd'])):.2f} standard deviations apart"
    return (
      f"{head} {how} {rest}{adjusted} ({shown} {number_text(g)} vs {number_text(r)}{smd}); confirmed on held-out rows."
    )
  rel = float(rel)
  ci = _percent_ci(rel, row.get("relative_ci_low"), row.get("relative_ci_high"))
  return (
    f"{head} was {abs(rel):.0%} {'higher' if rel >= 0 else 'lower'}{ci} than for {rest}{adjusted} "
    f"({shown} {number_text(g)} vs {number_text(r)}); confirmed on held-out rows."
  )


def _once(hidden: str) -> str:
  """A row's `hidden` reasons with the exploration half's copy of a confirmation half's reason left out (a report
  audit: the sentence gave the same reason twice) and the kept one marked "(both halves)" (a review: the reader lost
  that the exploration half was blanked too)."""
  parts = hidden.split("; ")
  prefix = "exploration half: "
  kept = [
    f"{p} (both halves)" if prefix + p in parts else p
    for p in parts
    if not (p.startswith(prefix) and p[len(prefix) :] in parts)
  ]
  return "; ".join(kept)


def _why_hidden(hidden: str) -> str:
  """A row's `hidden` reasons (`_once`) as a clause of its sentence, without parentheses inside parentheses (a report
  audit: "(... (fewer than 11) would follow: run the measure ... to see them (both halves))"): "in both halves, this
  cohort's rows missing the measure (fewer than 11) would follow (to see them, run the measure ...)"."""
  clauses = []
  for part in _once(hidden).split("; "):
    where = ""
    if part.endswith(" (both halves)"):
      part, where = part.removesuffix(" (both halves)"), "in both halves, "
    elif part.startswith("exploration half: "):
      part, where = part.removeprefix("exploration half: "), "in the exploration half, "
    reason, _, advice = part.partition(": run ")
    advice = advice.removesuffix(" to see them")
    clauses.append(where + reason + (f" (to see them, run {advice})" if advice else ""))
  return "; and ".join(clauses)


def _plain_words(
  confirmed: pd.DataFrame, info: dict, *, favorable: list | tuple, config: Any = None, binary: list | tuple = ()
) -> str:
  """The report's opening: each confirmed finding in one sentence (`finding_sentence`), and what "the rest" is."""
  if not len(confirmed):
    return "<p>No finding was confirmed on the held-out rows.</p>"
  adjusted_by = info.get("adjusted_by") or ()
  items = "".join(
    f"<li>{esc(finding_sentence(r, adjusted_by=adjusted_by, favorable=favorable, binary=binary))}</li>"
    for r in confirmed.to_dict("records")
  )
  return (
    "<h2>In plain words</h2><p>Each confirmed finding in one sentence. &#8220;The rest&#8221; of a cohort is "
    "everyone else in it: the rows of every other group of that protected column, including rows whose group is "
    f"unknown or missing. The percentages are the relative difference, group over rest.</p><ul>{items}</ul>"
    + _how_confirmed(info, adjusted=bool(adjusted_by), config=config)
  )


def _explained(config: Any) -> str:
  """The confirmation rules on what may explain a gap, as `config` ran them (a report audit: with the mirror check
  off the paragraph still said a confirmed gap was not another group's opposite gap)."""
  newness = getattr(config, "confirm_new_z", 2.0) is not None
  mirror = getattr(config, "mirror_z", 2.0) is not None
  text = "is at least the summary's <code>min_relative_diff</code> apart"
  if newness and mirror:
    return text + ", and is not explained by a larger cohort holding it or by another group's opposite gap"
  checked = ["is not explained by a larger cohort holding it"] if newness else []
  checked += ["is not explained by another group's opposite gap"] if mirror else []
  off = (["a larger cohort's gap held again (the newness check was off)"] if not newness else []) + (
    ["another group's opposite gap (the mirror check was off)"] if not mirror else []
  )
  return (
    ", ".join([text, *checked[:-1]])
    + (f" and {checked[-1]}" if checked else "")
    + f"; the run did not check whether it is {' or '.join(off)}"
  )


def _how_confirmed(info: dict, *, adjusted: bool, config: Any = None) -> str:
  """What "confirmed on held-out rows" means, in words a clinical lead can check against the summary (`config`: the
  run's `DiscoveryConfig`, for its correction and p), and, for a run without case-mix adjustment, that its gaps may
  be case mix."""
  if getattr(config, "correction", "weighted") == "bh":
    error = "keeps the expected share of false findings among those confirmed at most"
  else:
    error = "keeps the chance of even one false confirmation at most"
  if getattr(config, "pooled_check", True):
    corrected = (
      "the p it corrects is <code>p_confirm</code>, the larger of the test's <code>p_value</code> and a "
      "pooled-variance test's"
    )
  else:
    corrected = "the p it corrects is the test's, <code>p_value</code>"
  share = info.get("explore_fraction")
  half = f" ({share:.0%} of the rows)" if isinstance(share, float) else ""
  screen, q, candidates = info.get("z_screen"), info.get("q"), info.get("candidates")
  new_z = info.get("explore_new_z")
  newness = (
    " and that were not a larger cohort's gap again (under a parent with the same gap, only where the cohort's own "
    f"gap exceeded the rest of that parent's by a z of {esc(new_z)} or more)"
    if new_z is not None
    else ""
  )
  among = (
    f" among {'the one candidate' if candidates == 1 else f'all {candidates:,} candidates'}"
    if isinstance(candidates, int)
    else " among all candidates"
  )
  if adjusted:  # an adjusted rate's candidate may be left out of the family (`confirm.RATE_UNTESTED`)
    among += " (less any left out as not testable, which their reason says)"
  text = (
    "<p><b>What &#8220;confirmed on held-out rows&#8221; means.</b> The rows were split at random (a seeded hash of "
    f"each row) into an exploration part{esc(half)} and a confirmation part. The search saw only the exploration "
    f"rows and kept as candidates the gaps whose |z| reached {esc(screen)} there{newness}; every candidate was then tested "
    "again on the confirmation rows alone, which no choice of the search has seen. A finding is confirmed when, "
    f"there, it is significant after a multiple-testing correction{esc(among)} that {error} {esc(q)} "
    f"(<code>p_adjusted</code>; {corrected}), points the same way, {_explained(config)} (the summary's "
    "<code>confirmation</code> lists the rules). z is the normal "
    "equivalent of a test's p-value, signed by the gap's direction; every statistic shown is the confirmation "
    "rows'.</p>"
  )
  if not adjusted:
    text += (
      "<p><b>Not adjusted for case mix.</b> These gaps compare groups as they are: a group that has more urgent "
      "or higher-risk cases shows a gap in such measures even where its care is the same. Run with "
      "<code>--adjust</code> and the risk columns to compare observed with expected within strata.</p>"
    )
  return text


def _binary(run: cube_env.Discovery) -> list[str]:
  """The run's binary measures (read from its unadjusted confirmation cube: adjustment tests them as excess rates)."""
  return _measures_where(run, "is_binary")


def _signed(run: cube_env.Discovery) -> list[str]:
  """The run's measures that take values below 0 (`CubeMeta.is_signed`: no relative difference)."""
  return _measures_where(run, "is_signed")


def _measures_where(run: cube_env.Discovery, flag: str) -> list[str]:
  halves = getattr(run, "halves", None)  # a report of findings alone has none
  if halves is None:
    return []
  meta = halves.confirm_raw.meta
  return [m for m, b in zip(meta.measure_names, getattr(meta, flag)) if b]


def _scale(row: dict, *, adjusted: bool, binary: list | tuple) -> str:
  """The `SUBJECTS` key of a finding: its row's scale, "binary" for a binary measure that adjustment tests as excess
  rates (its row's scale "linear"), "linear" for any scale without one."""
  if adjusted and row["measure"] in binary:
    return "binary"
  return row.get("scale") if row.get("scale") in SUBJECTS else "linear"


def _plot_label(row: dict, *, adjusted: bool, binary: list | tuple) -> str:
  """The finding plot's y label: the measure and what its plotted means are (`SUBJECTS`, adjusted or not; a report
  audit: adjusted observed / expected ratios were labelled as the measure's geometric mean)."""
  _, means, adjusted_means = SUBJECTS[_scale(row, adjusted=adjusted, binary=binary)]
  template = adjusted_means if adjusted else means
  return template.format(m=row["measure"]) if "{m}" in template else f"{row['measure']} ({template})"


def _plot_alt(row: dict) -> str:
  """A finding plot's alt text: what it compares, which side is higher (`direction`, of the plotted means), and
  whether the small-cell rule blanked its numbers (`hidden_note`)."""
  text = f"{row['cohort']}: {row['group']} vs {row['reference']}, {row['measure']}"
  if row.get("direction") in ("higher", "lower"):
    text += f"; {row['group']} {row['direction']} than {row['reference']}"
  hidden = hidden_note(row)
  return text + (f"; {hidden}" if hidden else "")


def _check_first(info: dict) -> str:
  """The coding notes that are warnings, in a box above the findings (an analyst's audit: a swallowed row, a code
  read as a group, a measure never recorded at a site sat below a 24-row summary, among routine notes)."""
  lines = warnings_in(info.get("coding", []))
  if not lines:
    return ""
  items = "".join(f"<li>{esc(line)}</li>" for line in lines)
  return (
    '<div class="warn"><h2>Check these first</h2><p>How the table was read left these for you to look at before the '
    f"findings are shown to anyone (each is also listed under Coding of the table).</p><ul>{items}</ul></div>"
  )


def render_html(
  run: cube_env.Discovery, info: dict, table: pd.DataFrame, *, planted: pd.DataFrame | None = None
) -> str:
  confirmed = table[table["confirmed"].astype(bool)] if len(table) else table
  other = table[~table["confirmed"].astype(bool)] if len(table) else table
  adjusted, binary = bool(info.get("adjusted_by")), _binary(run)
  parts = [
    '<?xml version="1.0" encoding="utf-8"?>',
    "<!DOCTYPE html>",
    '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>',
    '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
    f"<title>Disparity findings: {esc(info['data'])}</title><style>{STYLE}</style></head><body><main>",
    "<h1>Disparity findings</h1>",
    _check_first(info),
    _plain_words(confirmed, info, favorable=getattr(run.config, "favorable", ()), config=run.config, binary=binary),
    f"<h2>Summary</h2>{_summary_table(info)}",
  ]
  if "truth" in info:
    parts.append(_truth_section(info["truth"], planted))
  leads = [lead for lead, _ in stories_of(confirmed)]
  parts.append(
    f"<h2>Confirmed findings</h2><p>{esc(plural(len(confirmed), 'confirmed finding'))} in "
    f"{esc(plural(len(leads), 'story', 'stories'))}. A "
    f"story gathers the findings of one protected group, measure and direction whose cohorts share at least "
    f"half of the smaller cohort's rows; its headline row is the most specific strong one, and the others "
    f"are in the collapsible row under it. Statistics are from the confirmation half; <code>explore_z</code> is "
    f"the exploration half's z. "
    f"{_scales_note(table, favorable=getattr(run.config, 'favorable', ()), signed=_signed(run), adjusted=adjusted)}"
    "</p>"
    f"{_stories_table(confirmed)}"
  )
  plots = [
    _img(
      finding_plot(r, ylabel=_plot_label(r, adjusted=adjusted, binary=binary)),
      _plot_alt(r),
    )
    for r in leads[:MAX_PLOTS]
  ]
  if len(leads) > MAX_PLOTS:
    more = len(leads) - MAX_PLOTS
    plots.append(
      f"<p>{esc(plural(more, 'more story', 'more stories'))} {'is' if more == 1 else 'are'} not plotted (each is in "
      "the table above and in findings.csv).</p>"
    )
  if leads:  # what the plots show (a report audit: no legend, and an axis that does not start at 0)
    parts.append(
      "<p>Each plot is a story's headline finding: the group (red) and the rest or reference group (blue), the "
      "mean or rate with its 95% interval, on the exploration rows (left) and the confirmation rows (right). The "
      "vertical axis does not start at 0, so read the gap from its labels.</p>"
    )
  parts.append('<div class="plots">' + "".join(plots) + "</div>")
  caption = "Unconfirmed candidates: not confirmed on held-out rows"
  parts.append(f"<h2>Unconfirmed candidates</h2>{_table(other, ['reason'] + VIEW, caption)}")
  alt = "explored cohorts and the paths to findings (each finding's path is in the path column of the tables above)"
  parts.append(f"<h2>Explored tree</h2>{_img(tree_plot(run), alt)}")
  parts.append("</main></body></html>")
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
    "explore_new_z",
    "q",
    "confirmation",
    "min_relative_diff",
    "max_depth",
    "min_group",
    "adjusted_by",
    "favorable",
    "explore_fraction",
    "max_categories",
    "time_limit",
    "search_ended",
    "seed",
  ):
    rows.append(f'<tr><th scope="row">{esc(key)}</th><td>{_summary_value(key, info.get(key))}</td></tr>')
  coding = "".join(f"<li>{esc(line)}</li>" for line in info.get("coding", []))
  return f"<table><caption>Run summary</caption>{''.join(rows)}</table><h3>Coding of the table</h3><ul>{coding}</ul>"


def _summary_value(key: str, value: Any) -> str:
  """A summary entry's text: counts whole, a list as its items ("none" when empty, as for no `adjusted_by`)."""
  if isinstance(value, (list, tuple)):
    return esc(", ".join(str(v) for v in value) or "none")
  if value is None:  # no time limit
    return "none"
  if key in SUMMARY_COUNTS and not _blank(value):
    return f"{round(float(value)):,}"
  return esc(value)


def _truth_section(truth: dict, planted: pd.DataFrame | None) -> str:
  rows = "".join(
    f'<tr><th scope="row">{esc(k)}</th>' + "".join(_td(c, v) for c, v in s.items()) + "</tr>" for k, s in truth.items()
  )
  head = "".join(_th(k) for k in next(iter(truth.values())))
  caption = "<caption>Truth score: the planted effects found</caption>"
  out = f"<h2>Truth score (synthetic data)</h2><table>{caption}<tr><td></td>{head}</tr>{rows}</table>"
  if planted is not None and len(planted):
    out += _table(planted, list(planted.columns), "Planted effects (synthetic truth)")
  return out
