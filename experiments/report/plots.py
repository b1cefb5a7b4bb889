"""Plots of the report, drawn on `matplotlib.figure.Figure` (no pyplot, no global backend) as PNG data URIs."""

from __future__ import annotations

import base64
import io
import math
import struct

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

import cube_env

MAX_PLOTS = 24  # finding plots in the HTML (all findings are in the JSON and CSV)
MAX_TREE_NODES = 400  # explored-tree nodes drawn (paths to findings always)
# Plots are saved at `DPI` and shown at `SHOWN_DPI` (`shown_size`): sharp when printed or zoomed, the same size on
# screen as before (a print audit: 90 dpi was blurry on paper). In 256 colours: about a third of the bytes, no visible loss.
DPI, SHOWN_DPI = 180, 90
PNG_URI = "data:image/png;base64,"


def _png(fig: Figure) -> str:
  drawn, buf = io.BytesIO(), io.BytesIO()
  fig.savefig(drawn, format="png", dpi=DPI, bbox_inches="tight")
  Image.open(drawn).convert("RGB").quantize(256).save(buf, format="png", optimize=True)
  return PNG_URI + base64.b64encode(buf.getvalue()).decode("ascii")


def shown_size(uri: str) -> tuple[int, int] | None:
  """(width, height) to show a PNG data URI of `_png` at, in CSS pixels: its pixels at `SHOWN_DPI` (None for another
  URI)."""
  if not uri.startswith(PNG_URI):
    return None
  head = base64.b64decode(uri[len(PNG_URI) : len(PNG_URI) + 32])  # signature, IHDR's length and type, then the size
  if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":  # IHDR is a PNG's first chunk
    return None
  width, height = struct.unpack(">II", head[16:24])
  return round(width * SHOWN_DPI / DPI), round(height * SHOWN_DPI / DPI)


def _plain(text: str) -> str:
  """`text` drawn as it is: a '$' escaped, since matplotlib reads '$...$' as mathematics (a security audit: a group
  named '$\\foo$' failed the report with a parse error)."""
  return text.replace("$", r"\$")


def _cut(text: str, limit: int = 70) -> str:
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(text: str, limit: int = 70) -> str:
  return _plain(_cut(text, limit))


def _short_middle(text: str, limit: int) -> str:
  """`text` cut in the middle to `limit` characters: cohorts that share a long start (`procedure=total_knee_... &
  a...` twice, a report audit) keep the filters that tell them apart, at the end."""
  if len(text) <= limit:
    return _plain(text)
  head = (limit - 3) // 2
  return _plain(text[:head] + "..." + text[len(text) - (limit - 3 - head) :])


def plot_title(row: dict) -> str:
  """A finding plot's title, "cohort | protected" in at most 70 characters: the protected column whole (to 24), the
  cohort cut in the middle (a report audit: a long cohort cut from the end lost the "| protected" part)."""
  protected = _short(str(row["protected"]), 24)
  return f"{_short_middle(str(row['cohort']), 70 - 3 - len(protected))} | {protected}"


SIDES = (("group", "explore_"), ("rest", "explore_"), ("group", ""), ("rest", ""))  # a finding plot's means, in order


def _drawn(mean) -> bool:
  return mean is not None and not (isinstance(mean, float) and not math.isfinite(mean))


def hidden_note(row: dict) -> str:
  """What the small-cell rule blanked of a finding plot's means, in words ("" when it blanked none)."""
  drawn = sum(_drawn(row.get(f"{prefix}mean_{side}")) for side, prefix in SIDES)
  if drawn == len(SIDES):
    return ""
  return "numbers hidden by the small-cell rule" if not drawn else "some numbers hidden by the small-cell rule"


def finding_plot(row: dict, ylabel: str | None = None) -> str:
  """Group vs rest means with 95% intervals, exploration and confirmation halves; `ylabel` (default: the measure
  and its scale's mean) names what the means are (the report's names them with case-mix adjustment too)."""
  fig = Figure(figsize=(4.6, 2.8))
  ax = fig.subplots()
  for i, (side, prefix) in enumerate(SIDES):
    mean = row.get(f"{prefix}mean_{side}")
    lo, hi = row.get(f"{prefix}{side}_ci_low"), row.get(f"{prefix}{side}_ci_high")
    if not _drawn(mean):
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
    fontsize=8,
  )
  ax.axvline(1.5, color="#bbb", lw=0.8)
  why = hidden_note(row)
  if why:  # the small-cell rule blanked some means (an empty chart read as a fault: an audit)
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="#555")
  if ylabel is None:
    scale = {"log": "geometric mean", "binary": "rate", "ratio": "mean observed / expected"}.get(
      row.get("scale"), "mean"
    )
    ylabel = f"{_cut(str(row['measure']), 24)} ({scale})"
  ax.set_ylabel(_short(ylabel, 48), fontsize=8)
  ax.set_title(plot_title(row), fontsize=8)
  return _png(fig)


# What the explored tree's colours mean: (colour, "edge" or "node", text); `tree_figure` draws by these and its legend
# lists them, so the two cannot disagree. Candidates' paths are dashed and their cohorts squares, not by colour alone
# (an accessibility audit, WCAG 1.4.1); their orange is dark enough for 3:1 on white (4.8:1; WCAG 1.4.11).
TREE_CONFIRMED, TREE_CANDIDATE, TREE_EDGE, TREE_NODE = "#d62728", "#b35900", "#cccccc", "#888888"
TREE_LINE = {TREE_CONFIRMED: "-", TREE_CANDIDATE: "--", TREE_EDGE: "-"}  # an edge's line style, by its colour
TREE_MARKER = {TREE_CONFIRMED: "o", TREE_CANDIDATE: "s", TREE_NODE: "o"}  # a node's marker, by its colour
TREE_LEGEND = (
  (TREE_CONFIRMED, "edge", "path to a confirmed finding"),
  (TREE_CANDIDATE, "edge", "path to unconfirmed candidates only"),
  (TREE_CONFIRMED, "node", "cohort with a confirmed finding (labelled)"),
  (TREE_CANDIDATE, "node", "cohort with unconfirmed candidates only"),
  (TREE_NODE, "node", "other visited cohort"),
)
TREE_LABEL_PT = 8  # font size of the cohort labels
TREE_LABEL_GAP = 1.3  # least distance between two labels' centres at one depth, in label heights
MAX_TREE_HEIGHT = 30.0  # inches; beyond it a depth's extra labels are left out (and counted in the title)
_AXES_HEIGHT = 0.77  # share of the figure's height the axes get (matplotlib's default subplot top minus bottom)


def _ancestors(queries, parents: np.ndarray) -> set[int]:
  """`queries` and every cohort on their paths from the root (visit indices)."""
  out = set()
  for q in queries:
    q = int(q)
    while q >= 0 and q not in out:
      out.add(q)
      q = int(parents[q])
  return out


def _spread(ys: list[float], gap: float) -> list[float]:
  """Heights near the ascending `ys`, at least `gap` apart and within [gap / 2, 1 - gap / 2] (fits if len * gap <= 1)."""
  out = list(ys)
  for i in range(len(out)):
    out[i] = max(out[i], out[i - 1] + gap if i else gap / 2)
  if out and out[-1] > 1.0 - gap / 2:
    out[-1] = 1.0 - gap / 2
    for i in range(len(out) - 2, -1, -1):
      out[i] = min(out[i], out[i + 1] - gap)
  return out


def _tree_labels(labelled: list[list[int]], leads: set[int]) -> tuple[list[list[int]], float, float, int]:
  """(the labels kept per depth, the figure's height in inches, their least gap in axes height, how many left out).

  The height gives the most crowded depth `TREE_LABEL_GAP` label heights per
  label, within [5, `MAX_TREE_HEIGHT`] inches; a depth with more labels than
  then fit keeps its story leads' cohorts first, then the earliest visited.
  """
  label_in = TREE_LABEL_PT * TREE_LABEL_GAP / 72.0
  most = max((len(level) for level in labelled), default=0)
  height = float(np.clip(most * label_in / _AXES_HEIGHT + 0.5, 5.0, MAX_TREE_HEIGHT))
  gap = label_in / (_AXES_HEIGHT * height)
  room, kept = int(1.0 / gap), []
  for level in labelled:
    keep = set(sorted(level, key=lambda q: (q not in leads, q))[:room])
    kept.append([q for q in level if q in keep])
  return kept, height, gap, sum(len(a) - len(b) for a, b in zip(labelled, kept))


def tree_figure(run: cube_env.Discovery) -> Figure:
  """Visited cohorts by depth (query order along y), each joined to the cohort it was reached from.

  Colours follow `TREE_LEGEND`, which the figure's legend lists: an edge on a
  path to a cohort with a confirmed finding is red, one on a path only to
  cohorts with unconfirmed candidates orange and dashed, the others grey; a
  node is a red dot for a confirmed finding's cohort, an orange square for one
  with only unconfirmed candidates. Only confirmed findings' cohorts are labelled (dozens of
  candidates' labels would overlap until none could be read); a depth's labels
  are spread at least `TREE_LABEL_GAP` label heights apart, with a thin line
  to their node where moved, and the figure grows taller to make room (up to
  `MAX_TREE_HEIGHT`; the labels that would not fit then are left out, story
  leads kept first, and counted in the title).
  """
  visits = run.search.visits
  found = run.findings
  confirmed = found[found["confirmed"].astype(bool)] if len(found) else found
  confirmed_q = {int(q) for q in confirmed["query"]} if len(found) else set()
  cand_q = {int(q) for q in found["query"]} if len(found) else set()
  parents = visits["parent"].to_numpy()
  to_confirmed = _ancestors(confirmed_q, parents)
  to_candidate = _ancestors(cand_q, parents)
  shown = sorted(to_candidate | set(range(min(len(visits), MAX_TREE_NODES))))
  depth = visits["depth"].to_numpy()
  max_depth = int(depth.max()) if len(visits) else 0
  ypos, levels = {}, []
  for d in range(max_depth + 1):
    level = [q for q in shown if depth[q] == d]
    levels.append(level)
    for i, q in enumerate(level):
      ypos[q] = (i + 0.5) / max(len(level), 1)
  leads = (
    {int(q) for q in confirmed.loc[confirmed["story_lead"].astype(bool), "query"]}
    if len(confirmed) and "story_lead" in confirmed
    else set()
  )
  labelled, height, gap, left_out = _tree_labels([[q for q in level if q in confirmed_q] for level in levels], leads)
  fig = Figure(figsize=(max(9.0, 2.4 * (max_depth + 1)), height))
  fig.subplots_adjust(bottom=0.11, top=0.11 + _AXES_HEIGHT)
  ax = fig.subplots()
  for q in shown:
    p = int(parents[q])
    if p in ypos:
      colour = TREE_CONFIRMED if q in to_confirmed else (TREE_CANDIDATE if q in to_candidate else TREE_EDGE)
      ax.plot(
        [depth[p], depth[q]],
        [ypos[p], ypos[q]],
        color=colour,
        ls=TREE_LINE[colour],
        lw=0.4 if colour == TREE_EDGE else 1.4,
        zorder={TREE_EDGE: 1, TREE_CANDIDATE: 2, TREE_CONFIRMED: 3}[colour],
      )
  colours = {q: TREE_CONFIRMED if q in confirmed_q else (TREE_CANDIDATE if q in cand_q else TREE_NODE) for q in shown}
  for colour in (TREE_NODE, TREE_CANDIDATE, TREE_CONFIRMED):  # one marker each; confirmed ones on top
    qs = [q for q in shown if colours[q] == colour]
    ax.scatter([depth[q] for q in qs], [ypos[q] for q in qs], s=10, c=colour, marker=TREE_MARKER[colour], zorder=4)
  for level in labelled:
    for q, y in zip(level, _spread([ypos[q] for q in level], gap)):
      moved = abs(y - ypos[q]) > 1e-9
      ax.annotate(
        _short_middle(str(visits["cohort"].iloc[q]), 70 if depth[q] == max_depth else 40),  # the last has room
        (depth[q], ypos[q]),
        xytext=(depth[q] + 0.06, y),
        textcoords="data",
        fontsize=TREE_LABEL_PT,
        va="center",
        arrowprops={"arrowstyle": "-", "lw": 0.3, "color": "#999999"} if moved else None,
        zorder=5,
      )
  handles = [
    Line2D([], [], color=c, lw=1.4, ls=TREE_LINE[c])
    if kind == "edge"
    else Line2D([], [], color=c, marker=TREE_MARKER[c], ms=4, ls="none")
    for c, kind, _ in TREE_LEGEND
  ]
  ax.legend(
    handles,
    [text for *_, text in TREE_LEGEND],
    fontsize=8,
    loc="upper center",
    bbox_to_anchor=(0.5, -0.5 / (_AXES_HEIGHT * height)),
    ncol=3,
  )
  hidden = len(visits) - len(shown)
  ax.set_xlabel("depth (filters)")
  ax.set_xticks(range(max_depth + 1))
  ax.set_yticks([])
  ax.set_ylim(-0.02, 1.02)  # room for the edge nodes' dots
  ax.set_title(
    f"{len(visits)} cohorts visited"
    + (f" ({hidden} not drawn)" if hidden > 0 else "")
    + (f"; {left_out} confirmed {'cohort' if left_out == 1 else 'cohorts'} not labelled for room" if left_out else ""),
    fontsize=9,
  )
  ax.set_xlim(-0.2, max_depth + 0.8)
  return fig


def tree_plot(run: cube_env.Discovery) -> str:
  """`tree_figure` as a PNG data URI."""
  return _png(tree_figure(run))
