"""Best-first search over the frontier of seen cohorts (issue 18, point 3; docs/design.md, Discovery).

A query observes the statistics of every cohort one drill-down away, so after
`k` queries the search knows the strongest |z| of many more cohorts than it has
visited: the frontier. `frontier` keeps it in a priority queue and spends each
query on the frontier cohort ranked highest, stepping from the visited parent
that revealed it (stored state, so no query walks back through known cohorts),
as best-first search with a heuristic does (Pearl 1984; with a learned policy
and value: Orseau et al. 2018, Orseau & Lelis 2021). A cohort seen from several
parents is queued once per parent and visited once, through its best-ranked
entry. A queue entry holds the parent's index in a list of visited states, not
the state, so the queue of a wide table (a few hundred drill-downs a query) stays
near 100 bytes an entry.

The ranking is pluggable (`Ranker`): a function of the parent's observation and
the parent's own score that returns a score per action, higher first.
`pixel_ranker` is the heuristic: the strongest |z| the observation shows for
the target cohort (as `greedy` and `beam` rank), minus `lift` times the
parent's score, so that with `lift > 0` a child that only inherits its
parent's gap ranks below one that sharpens it (a cohort revealed by several
parents takes its best rank, the one against its weakest parent so far). A learned ranker plugs in the same
way (`cube_env.discovery.ranking`: a value fitted on training worlds, the `learned` method). Ties go to
the shallower cohort, then the earlier query, then the lower action index:
the search is deterministic given the space.

A costlier ranking can refine the cheap one near the top only (`refiner`, the
`muzero` method's agent search): a visited cohort's drill-downs join the queue
with the ranker's scores, and the first time one of them reaches the top the
refiner scores all of that parent's drill-downs from its observation (kept
until then) and they rejoin the queue with those scores, so no query is spent
on a drill-down its refiner has not ranked and a parent whose drill-downs never
reach the top costs no refinement (lazy evaluation, as lazy A* delays its
costly heuristic; Tolpin et al. 2013). The order then differs from refining at
every visit only where a refinement would have lifted a drill-down that had
not reached the top. The cost: the observation of every visited cohort whose
drill-downs have not yet reached the top is kept for the refiner (most of them:
about 33 KB each on a 64 x 12 grid, 0.2 MB at 128 x 40), on top of the queue.

The default `lift` (`LIFT` = 0.5) was chosen on training worlds only: on 2
worlds each of the benchmark's standard, wide, deep and masked families
(`python -m experiments.benchmark quality --suite quick --split train --sweep`,
benchmarks/quality_sweep_frontier_train_cpu.jsonl) it had mean recall 0.875 at
0.5-5% and 300-1,000 query budgets, against 0.61 at lift 0, 0.60 at lift 1 and
0.72 for greedy.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from cube_env.discovery.space import BudgetSpent, Ledger, Progress, SearchResult, Space, drill_down_actions, target
from cube_env.environment.env import CHANNELS

MAX_ABS_Z = CHANNELS.index("max_abs_z")  # observation channel: strongest |z| / 10 of the target cohort
N_SIGNIFICANT = CHANNELS.index("log_num_significant")  # log(1 + number of significant tests)

LIFT = 0.5  # pixel_ranker's default weight on the parent's score (module docstring)
Ranker = Callable[[np.ndarray, float], np.ndarray]  # (obs [channels, F, C + 1], parent score) -> [A] scores
Refiner = Ranker  # the costlier scores of a parent's drill-downs, computed when one of them first reaches the top
Watch = Callable[[tuple, np.ndarray, float, list], None]  # (filters, obs, own score, queued actions) -> None


def pixel_scores(obs: np.ndarray) -> np.ndarray:
  """`[A]` score of each action's target cohort: strongest |z| / 10, ties by number of significant tests."""
  return (obs[MAX_ABS_Z] + 1e-3 * obs[N_SIGNIFICANT]).reshape(-1)


def pixel_ranker(lift: float = LIFT) -> Ranker:
  """Ranks a parent's drill-downs by their pixel score minus `lift` times the parent's own score."""
  if not np.isfinite(lift) or lift < 0:
    raise ValueError(f"frontier lift must be a finite number >= 0, got {lift!r}")

  def rank(obs: np.ndarray, parent_score: float) -> np.ndarray:
    return pixel_scores(obs) - lift * parent_score

  return rank


def frontier(
  space: Space,
  *,
  budget: int,
  seed: int,
  progress: Progress | None = None,
  lift: float = LIFT,
  ranker: Ranker | None = None,
  refiner: Refiner | None = None,
  watch: Watch | None = None,
) -> SearchResult:
  """Best-first search over the frontier of seen, unvisited cohorts (see module docstring).

  Args:
    space, budget, seed, progress: as every method (`methods.Method`); the search is deterministic, `seed` unused.
    lift: `pixel_ranker`'s weight on the parent's score (ignored when `ranker` is given).
    ranker: scores of a parent's actions from its observation; default `pixel_ranker(lift)`.
    refiner: scores that replace the ranker's for all of a parent's drill-downs once one of them reaches the top
      of the queue (module docstring); None: the ranker's scores are final.
    watch: called as `watch(filters, obs, own score, actions)` with every visited cohort whose unvisited
      drill-downs join the queue (`ranking.collect` makes training rows from it).
  """
  del seed
  rank = ranker if ranker is not None else pixel_ranker(lift)  # (`or` took a falsy ranker object for none)
  ledger = Ledger(space, budget, progress)
  c = space.env.shape.num_values
  visited: list[tuple] = []  # (state, filters) of each visited cohort, by query order
  queue: list[tuple] = []  # (-rank, depth, parent's index in `visited`, action, pixel score, refined)
  pending: dict[int, tuple] = {}  # parent's index -> (obs, own score, queued actions) awaiting the refiner
  queried: dict[tuple, list[int]] = {}  # a cohort's filters -> its drill-down actions whose cohorts were queried

  def record(key: tuple) -> None:
    """Files a queried cohort under each of its parents, by the action that drills from that parent into it (the
    same test as `target(parent, action) in ledger.index`, without building a target per action)."""
    for f, v in enumerate(key):
      if v >= 0:
        queried.setdefault(key[:f] + (-1,) + key[f + 1 :], []).append(f * (c + 1) + v)

  def unqueried(filters: tuple, actions: np.ndarray) -> list[int]:
    done = queried.get(filters)
    return (actions[~np.isin(actions, done)] if done else actions).tolist()

  def push(actions: list[int], ranks: np.ndarray, pixels: np.ndarray, depth: int, parent: int, refined: bool):
    for a, neg, pixel in zip(actions, (-ranks[actions]).tolist(), pixels[actions].tolist()):
      heapq.heappush(queue, (neg, depth, parent, a, pixel, refined))

  def scores(score: Ranker, who: str, obs: np.ndarray, own: float, actions: list[int], filters: tuple) -> np.ndarray:
    ranks = np.asarray(score(obs, own), np.float64)
    if not np.isfinite(ranks[actions]).all():
      raise ValueError(f"frontier: the {who} returned a non-finite score for a drill-down of cohort {filters}")
    return ranks

  def reveal(obs: np.ndarray, state, filters: tuple, depth: int, own: float) -> None:
    if depth >= space.max_depth:  # nothing to drill into
      return
    actions = unqueried(filters, drill_down_actions(filters, np.asarray(state.mask), c))
    if not actions or not ledger.left:  # the queries (or time) left read only where a cohort is left to spend them on
      return
    ranks, pixels = scores(rank, "ranker", obs, own, actions, filters), pixel_scores(obs)
    if watch is not None:
      watch(filters, obs, own, actions)
    visited.append((state, filters))
    if refiner is not None:
      pending[len(visited) - 1] = (obs, own, actions)
    push(actions, ranks, pixels, depth + 1, len(visited) - 1, refiner is None)

  def refine(parent_index: int, depth: int) -> None:
    """The refiner's scores for a parent's drill-downs not yet queried; they rejoin the queue."""
    obs, own, actions = pending.pop(parent_index)
    filters = visited[parent_index][1]
    actions = unqueried(filters, np.asarray(actions))
    ranks, pixels = scores(refiner, "refiner", obs, own, actions, filters), pixel_scores(obs)
    push(actions, ranks, pixels, depth, parent_index, True)

  try:
    obs, state, _ = ledger.root()
    reveal(obs, state, tuple(int(v) for v in np.asarray(state.filters)), 0, 0.0)
    while queue:
      _, depth, parent_index, action, own, refined = heapq.heappop(queue)
      parent, parent_filters = visited[parent_index]
      key = target(parent_filters, action, c)
      if key in ledger.index:
        continue  # reached from another parent already
      if not ledger.left:  # read with a cohort left to visit, so a limit passed is why it stops (`stopped_by`)
        break
      if not refined:
        if parent_index in pending:
          refine(parent_index, depth)
        continue  # its refined entry is queued
      obs, state, _ = ledger.step(parent, action)
      record(key)
      reveal(obs, state, key, depth, own)
  except BudgetSpent:
    pass
  note = "best-first, learned ranking" if ranker is not None else f"best-first by pixel |z|, lift {lift:g}"
  if refiner is not None:
    note += ", refined near the top"
  return ledger.result("frontier", note=note)
