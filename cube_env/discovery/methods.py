"""The method registry and the discovery methods that need no trained agent (docs/design.md, Discovery and confirmation).

A method is a function
`method(space, *, budget, seed, progress=None, **options) -> SearchResult`
(`Method`) that pays one query per environment step (`space.Ledger`), the
root included. Methods are found by name in a registry: the built-ins below
are registered at import, and a plug-in joins with `register_method(name, fn)`
(the `muzero` method of `experiments` is one).

* `exhaustive`: the oracle (`enumerate_findings`) to the deepest depth whose
  every visitable cohort fits in the budget.
* `random` (`random_walk`): one episode of uniformly random legal actions.
* `greedy`: one episode; each step takes the legal action whose target
  cohort has the strongest |z| in the observation pixels among cohorts not yet
  visited (a random legal action when all are visited).
* `beam`: level by level, the `width` best unvisited drill-downs (by pixel
  |z|) of the `width` best visited cohorts of the level above that still have
  unvisited children; rounds repeat from the root, so a larger budget widens
  the beam's reach.
* `uct`: UCT (Kocsis & Szepesvari 2006) over the true environment with a
  uniform prior and transpositions (a cohort reached by two drill orders is
  one node; Childs, Brodeur & Kocsis 2008). A simulation descends by UCB1
  through nodes whose states are stored (no query), expands one untried
  drill-down in random order with one environment step (one query) and backs
  up the new cohort's number of new findings. Every simulated step that
  touches the environment is paid for.
* `frontier` (`cube_env.discovery.frontier`): best-first over every cohort seen
  but not visited, by pixel |z| (or a learned ranking), each query stepping from
  the stored parent that revealed the cohort.
* `learned` (`cube_env.discovery.ranking`): `frontier` ranked by a value fitted
  on training worlds (the chance that a seen cohort leads to a planted effect).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import types
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from cube_env.data.ingest import filters_to_codes
from cube_env.discovery import cohorts
from cube_env.discovery.frontier import frontier, pixel_scores
from cube_env.discovery.journal import journal_of
from cube_env.discovery.oracle import enumerate_findings
from cube_env.discovery.ranking import learned
from cube_env.discovery.space import (
  STOPPED_BUDGET,
  STOPPED_DONE,
  STOPPED_TIME,
  BudgetSpent,
  Ledger,
  Progress,
  SearchResult,
  Space,
  drill_down_actions,
  enumeration_rows,
  finish,
  fitting_depth,
  target,
  visitable_cohorts,
)

Method = Callable[..., SearchResult]  # fn(space, *, budget, seed, progress=None, **options) -> SearchResult


def random_walk(space: Space, *, budget: int, seed: int, progress: Progress | None = None) -> SearchResult:
  """Uniformly random legal actions from the root until the budget is spent."""
  ledger = Ledger(space, budget, progress)
  rng = np.random.default_rng([seed, 1])
  _, state, _ = ledger.root()
  try:
    while ledger.left:
      legal = np.nonzero(np.asarray(state.mask))[0]
      if len(legal) == 0:
        break
      _, state, _ = ledger.step(state, int(rng.choice(legal)))
  except BudgetSpent:
    pass
  return ledger.result("random")


def greedy(space: Space, *, budget: int, seed: int, progress: Progress | None = None) -> SearchResult:
  """Always to the unvisited neighbour with the strongest pixel |z| (see module docstring).

  Where every neighbour is visited it takes a random legal step, while some cohort a visited one showed as a legal
  step is still unvisited; once none is, every cohort it can reach is visited and it stops ("nothing left"; a cold
  audit: it spent the rest of the budget on known cohorts, 9,181 of 10,000 queries on a 529-cohort table).
  """
  ledger = Ledger(space, budget, progress)
  rng = np.random.default_rng([seed, 2])
  c = space.env.shape.num_values
  obs, state, _ = ledger.root()
  unvisited: set = set()  # cohorts shown as legal steps from visited ones, not yet visited (some may be since)
  while ledger.left:
    filters = tuple(int(v) for v in np.asarray(state.filters))
    legal = np.nonzero(np.asarray(state.mask))[0]
    if len(legal) == 0:
      break
    targets = [target(filters, a, c) for a in legal]
    fresh = np.asarray([t not in ledger.index for t in targets], bool)
    unvisited.update(t for t, f in zip(targets, fresh, strict=True) if f)
    if fresh.any():
      choices = legal[fresh]
      action = int(choices[np.argmax(pixel_scores(obs)[choices])])
    else:
      unvisited = {t for t in unvisited if t not in ledger.index}
      if not unvisited:
        break
      action = int(rng.choice(legal))
    obs, state, _ = ledger.step(state, action)
  return ledger.result("greedy")


@dataclasses.dataclass(eq=False)
class _Node:
  state: object
  scores: np.ndarray | None  # beam: `pixel_scores` of its observation, kept instead of it (a tenth of its memory)
  filters: tuple
  depth: int
  score: float  # pixel score seen from the parent (inf for the root)
  n: int = 0
  w: float = 0.0
  untried: list | None = None
  children: list | None = None
  exhausted: bool = False


def beam(space: Space, *, budget: int, seed: int, progress: Progress | None = None, width: int = 8) -> SearchResult:
  """Beam search with widening rounds (see module docstring)."""
  del seed  # deterministic: ties go to the lower action index
  if width < 1:
    raise ValueError(f"beam width must be at least 1, got {width}")
  ledger = Ledger(space, budget, progress)
  c = space.env.shape.num_values
  obs, state, _ = ledger.root()
  root = _Node(state, pixel_scores(obs), tuple(int(v) for v in np.asarray(state.filters)), 0, math.inf)
  nodes = {root.filters: root}
  try:
    while True:
      spent = ledger.used
      for depth in range(space.max_depth):
        parents = _open_nodes(nodes, depth, c, ledger)[:width]
        options = _children(parents, c, ledger)[:width]
        for score, _, parent, action in options:
          obs, state, _ = ledger.step(parent.state, action)
          key = tuple(int(v) for v in np.asarray(state.filters))
          nodes[key] = _Node(state, pixel_scores(obs), key, depth + 1, score)
      if ledger.used == spent:
        break  # every visitable cohort is visited
  except BudgetSpent:
    pass
  return ledger.result("beam", note=f"beam width {width}")


def _unvisited(node: _Node, c: int, ledger: Ledger) -> list[int]:
  acts = drill_down_actions(node.filters, np.asarray(node.state.mask), c)
  return [int(a) for a in acts if target(node.filters, a, c) not in ledger.index]


def _open_nodes(nodes: dict, depth: int, c: int, ledger: Ledger) -> list[_Node]:
  level = [n for n in nodes.values() if n.depth == depth and _unvisited(n, c, ledger)]
  return sorted(level, key=lambda n: -n.score)


def _children(parents: list[_Node], c: int, ledger: Ledger) -> list[tuple]:
  seen, out = set(), []
  for rank, parent in enumerate(parents):
    scores = parent.scores
    for a in _unvisited(parent, c, ledger):
      key = target(parent.filters, a, c)
      if key not in seen:
        seen.add(key)
        out.append((float(scores[a]), rank, parent, a))
  return sorted(out, key=lambda o: (-o[0], o[1], o[3]))


def uct(
  space: Space, *, budget: int, seed: int, progress: Progress | None = None, exploration: float = 1.0
) -> SearchResult:
  """UCT with a uniform prior over the true environment (see module docstring)."""
  ledger = Ledger(space, budget, progress)
  rng = np.random.default_rng([seed, 3])
  c = space.env.shape.num_values
  _, state, n_root = ledger.root()
  root = _Node(state, None, tuple(int(v) for v in np.asarray(state.filters)), 0, math.inf, n=1, w=0.0)
  nodes = {root.filters: root}
  best = [max(1.0, float(n_root))]
  try:
    # The ledger refuses a query past the budget or the time limit (`BudgetSpent`), so a tree found exhausted
    # after the last query stops with nothing left, not at a limit that passed meanwhile (`Ledger.stopped_by`).
    while not root.exhausted:
      _simulate(root, nodes, ledger, rng, c, exploration, best)
  except BudgetSpent:
    pass
  return ledger.result("uct", note=f"UCB1 exploration constant {exploration:g}; uniform prior")


def _expandable(node: _Node, rng, c: int) -> list:
  if node.untried is None:
    acts = drill_down_actions(node.filters, np.asarray(node.state.mask), c)
    node.untried = [int(a) for a in rng.permutation(acts)]
    node.children = []
  return node.untried


def _simulate(root: _Node, nodes: dict, ledger: Ledger, rng, c: int, explore: float, best: list) -> None:
  path = [root]
  node = root
  while True:
    untried = _expandable(node, rng, c)
    if untried:
      action = untried.pop()
      key = target(node.filters, action, c)
      if key in nodes:  # transposition: link, no query
        node.children.append(nodes[key])
        node = nodes[key]
        path.append(node)
        continue
      _, state, reward = ledger.step(node.state, action)
      child = _Node(state, None, key, node.depth + 1, 0.0, n=1, w=float(reward))
      nodes[key] = child
      node.children.append(child)
      best[0] = max(best[0], float(reward))
      for p in path:
        p.n += 1
        p.w += reward
      return
    live = [ch for ch in node.children if not ch.exhausted]
    if not live:
      node.exhausted = True
      return
    log_n = math.log(max(node.n, 1))
    ucb = [ch.w / ch.n / best[0] + explore * math.sqrt(log_n / ch.n) for ch in live]
    node = live[int(np.argmax(ucb))]  # drill-downs only deepen: no cycles
    path.append(node)


def exhaustive(space: Space, *, budget: int, seed: int, progress: Progress | None = None) -> SearchResult:
  """The oracle to the deepest depth whose visitable cohorts all fit in the budget.

  With a `journal.Journal` as (or in) `progress` it resumes by chunks: each column subset's findings are journaled and a
  resumed run computes only the subsets not yet saved.
  """
  del seed
  return enumerate_space(space, budget=budget, progress=progress)


def enumerate_space(
  space: Space,
  *,
  budget: int,
  progress: Progress | None = None,
  done: Mapping | None = None,
  deadline: float | None = None,
) -> SearchResult:
  """`exhaustive`, with `done`: column subsets already computed (`oracle.enumerate_findings`; `auto`'s time probe),
  used and counted once, and `deadline` (a `time.perf_counter()` reading; `auto` under a time limit): no column
  subset is begun after it, and the result holds the cohorts of the subsets finished (`stopped_by` the time
  limit). A function apart, so that the registered method's options stay its own (a benchmark's rows record
  them)."""
  journal = journal_of(progress)
  t0 = time.perf_counter()
  Ledger(space, budget)  # validates the budget
  # The deepest depth whose cohorts all fit, counted depth by depth: a wide table's deeper levels (millions of
  # cohorts) are neither counted nor built when the budget stops short of them.
  depth, _, _ = fitting_depth(space, budget)
  cube = space.cube
  codes = np.concatenate([visitable_cohorts(space, d) for d in range(depth + 1)])
  if depth >= 1:
    found = enumerate_findings(
      cube,
      max_depth=depth,
      min_group=space.min_group,
      z_screen=space.z_screen,
      new_z=space.new_z,
      min_cohort=float(space.params.min_cohort),
      include_old=False,
      journal=journal,
      done=done,
      deadline=deadline,
    )
    queries = int(found.attrs["queries"])
    finished, of_subsets = set(found.attrs["subsets"]), found.attrs["of_subsets"]
  else:
    found = cohorts.cohort_table(
      cube,
      codes[:1],
      **space.thresholds,
      only_new=True,
    )
    queries = 1
    finished, of_subsets = {()}, 1
  if journal is not None:
    journal.save()
  if progress is not None:
    progress(queries)
  note = (
    f"all {queries} visitable cohorts to depth {depth}"
    if depth == space.max_depth
    else f"depth {depth} only: the cohorts to depth {depth + 1} exceed the budget"
  )
  stopped = STOPPED_DONE if depth == space.max_depth and queries < budget else STOPPED_BUDGET
  if len(finished) < of_subsets:  # the deadline passed: the cohorts of the column subsets finished
    codes = codes[[tuple(np.flatnonzero(row >= 0)) in finished for row in codes]]
    note = f"stopped at its time limit after {len(finished)} of {of_subsets} column subsets ({queries:,} cohort{'s' if queries != 1 else ''})"
    stopped = STOPPED_TIME
  visits = _canonical_visits(codes, found, cube)
  return finish(
    space,
    "exhaustive",
    budget=budget,
    queries=queries,
    visits=visits,
    seconds=time.perf_counter() - t0,
    note=note,
    rows_scanned=enumeration_rows(space, depth) // of_subsets * len(finished),
    stopped_by=stopped,
  )


def _canonical_visits(codes: np.ndarray, found: pd.DataFrame, cube) -> list[tuple]:
  """Visits in breadth-first order; each cohort's parent drops its last filter (column order)."""
  keys = [tuple(int(v) for v in row) for row in codes]
  index = {k: i for i, k in enumerate(keys)}
  hits: dict[tuple, int] = {}
  for f in found["filters"]:
    k = tuple(int(v) for v in filters_to_codes(cube.meta, f))
    hits[k] = hits.get(k, 0) + 1
  out = []
  for k in keys:
    filtered = [i for i, v in enumerate(k) if v >= 0]
    parent = -1
    if filtered:
      up = list(k)
      up[filtered[-1]] = -1
      parent = index.get(tuple(up), -1)
    out.append((k, parent, hits.get(k, 0)))
  return out


_REGISTRY: dict[str, Method] = {}
METHODS = types.MappingProxyType(_REGISTRY)  # read-only view of the registry: {name: method}


def register_method(name: str, fn: Method, *, replace: bool = False) -> None:
  """Makes `fn` available as `name` (to `get_method`, `run_discovery`, the CLIs).

  Raises:
    ValueError: `name` is empty or taken (unless `replace`); TypeError: `fn` is not callable.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"a method name must be a non-empty string, got {name!r}")
  if not callable(fn):
    raise TypeError(f"method {name!r} must be callable, got {type(fn).__name__}")
  if name in _REGISTRY and not replace and _REGISTRY[name] is not fn:
    raise ValueError(f"method {name!r} is already registered (pass replace=True to replace it)")
  _REGISTRY[name] = fn


def get_method(name: str) -> Method:
  """The method registered as `name`; ValueError listing the registered names otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(method_names())}")
  return _REGISTRY[name]


CALL = ("space", "budget", "seed", "progress")  # what the pipeline passes every method; its options are the rest


def check_options(name: str, fn: Method, options: dict) -> None:
  """ValueError naming an option that method `fn` (registered as `name`) does not take, before any table is read.

  An unknown option (`DiscoveryConfig.method_options`) was a TypeError from inside the search, after the table was
  split and its cubes built (an audit). A method that takes `**options` takes any, except one with a `fallback`
  setting (`auto`), which passes them to the method it names: they are checked against that one.
  """
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):  # a callable Python cannot inspect (a C extension's): it checks its own options
    return
  for key in options:
    if key in CALL:
      raise ValueError(
        f"method_options: {key!r} is not an option of method {name!r}: the pipeline gives every method its {key}"
      )
  takes = [k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k not in CALL]
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    if "fallback" not in params:
      return
    fallback = options.get("fallback", params["fallback"].default)
    rest = {k: v for k, v in options.items() if k not in takes}
    try:
      check_options(fallback, get_method(fallback), rest)
    except ValueError as err:  # say whose options they are (a review: "method 'learned'" for an auto run)
      raise ValueError(f"{err} (method {name!r} passes its options to its fallback, {fallback!r})") from None
    return
  unknown = [k for k in options if k not in takes]
  if unknown:
    known = ", ".join(takes) or "none"
    raise ValueError(f"method_options: method {name!r} has no option {unknown[0]!r}; its options are: {known}")


def method_names() -> tuple[str, ...]:
  """Registered names, in order of registration (the built-ins first)."""
  return tuple(_REGISTRY)


# The methods that need no agent; plug-ins (the `muzero` agent, the pysubgroup peer) register beside them.
BUILTIN_METHODS: types.MappingProxyType = types.MappingProxyType(
  {
    "exhaustive": exhaustive,
    "random": random_walk,
    "greedy": greedy,
    "beam": beam,
    "uct": uct,
    "frontier": frontier,
    "learned": learned,
  }
)
for _name, _fn in BUILTIN_METHODS.items():
  register_method(_name, _fn)
