"""A learned ranking of the frontier (issue 18, points 2-5): the chance that a seen cohort leads to a planted effect.

`frontier` spends each query on the seen, unvisited cohort ranked highest. The
heuristic ranks by the strongest |z| the parent's observation shows for the
cohort; this module learns the ranking instead, from random training worlds
(`cube_env.worlds`, training split only), as a value: the probability that the
target cohort is on a path to a planted effect (its filters a subset of the
planted cohort's filters, the planted cohort included).

* `features`: per drill-down of a parent, a fixed-length vector read off the
  parent's observation (`FEATURES` names them): the target's |z|, number of
  significant tests and size, the parent's depth, size and own score, and the
  target's standing within its column and among its siblings. Every feature is a
  function of one pixel and of summaries of its row or of the whole grid, so one
  ranker reads a table of any width and any number of categories.
* `RankerWeights`: a two-layer perceptron over standardised features (numpy in
  the search loop: a few hundred drill-downs a query cost microseconds, with no
  device dispatch), fitted by `fit` (JAX + optax, class-balanced logistic
  loss, full batch) and stored as `.npz` (`save`, `load`).
* `collect`: training rows from one world: a frontier search with a noisy
  pixel ranking (so the rows cover more than the heuristic's own path), every
  revealed drill-down's features and its label against the world's truth.
* `learned_ranker`: the `frontier.Ranker` that ranks by the fitted log-odds;
  `PACKAGED` is the one shipped with the package (made by
  `python -m experiments.train_ranker`, from training worlds only).

A ranking that learns only from the truth of training worlds cannot see the
evaluation worlds: their seeds and schemas are disjoint (`worlds.split_of`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import zipfile
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cube_env.data.ingest import filters_to_codes
from cube_env.discovery.frontier import LIFT, MAX_ABS_Z, N_SIGNIFICANT, Ranker, frontier, pixel_ranker
from cube_env.discovery.space import Progress, SearchResult, Space, drill_down_actions
from cube_env.environment.env import CHANNELS

LEGAL, LOG_SIZE, REAL = CHANNELS.index("legal"), CHANNELS.index("log_size"), CHANNELS.index("real")
DEPTH, CURRENT_LOG_SIZE = CHANNELS.index("depth"), CHANNELS.index("current_log_size")
FEATURES = (
  "z",  # strongest |z| / 10 of the target cohort
  "n_significant",  # log(1 + significant tests) of the target
  "log_size",  # log rows of the target / log rows of the table
  "size_ratio",  # target's log size minus the parent's
  "parent_log_size",
  "parent_depth",  # parent's depth / the space's maximum depth
  "parent_score",  # the parent's own pixel score, seen from its parent (0 at the root)
  "lift",  # z minus the parent's score
  "column_max",  # strongest z among the column's values
  "column_mean",  # mean z over the column's values
  "above_column",  # z minus the column's mean
  "sibling_rank",  # share of the parent's legal moves to new cohorts (drill-downs and switches) with a lower z
  "sibling_max",  # strongest z among those moves (an audit: "drill-downs" here always counted switches too)
  "column_values",  # number of values of the column / the grid's width
)
NUM_FEATURES = len(FEATURES)
PACKAGED = os.path.join(os.path.dirname(__file__), "ranker.npz")


def features(obs: np.ndarray, parent_score: float) -> np.ndarray:
  """`[A, NUM_FEATURES]` float32: the features of every action's target cohort (A = F x (C + 1)).

  Args:
    obs: a parent's observation `[channels, F, C + 1]` (`CubeEnv`), the last column "all".
    parent_score: the parent's own pixel score (as `frontier` passes it).
  """
  num_f, width = obs.shape[1], obs.shape[2]
  z = obs[MAX_ABS_Z]
  values = obs[REAL][:, :-1] > 0  # [F, C] real categories of each column
  drill = (obs[LEGAL][:, :-1] > 0) & values
  zv = np.where(values, z[:, :-1], 0.0)
  n_values = np.maximum(values.sum(axis=1), 1)
  # A column's share of the widest real column, not of the grid's width: a grid padded with empty values (a space made
  # with a wider `shape`) would otherwise shrink every share and re-rank the frontier (a cold audit; on an unpadded
  # grid the widest column fills the grid, so the packaged ranker's features are unchanged).
  widest = int(n_values.max())  # (each at least 1, above)
  column_max = zv.max(axis=1)
  column_mean = zv.sum(axis=1) / n_values
  sib = np.sort(z[:, :-1][drill]) if drill.any() else np.zeros(1, np.float32)
  rank = np.searchsorted(sib, z, side="left") / max(len(sib), 1)
  full = (num_f, width)
  out = np.stack(
    [
      z,
      obs[N_SIGNIFICANT],
      obs[LOG_SIZE],
      obs[LOG_SIZE] - obs[CURRENT_LOG_SIZE],
      obs[CURRENT_LOG_SIZE],
      obs[DEPTH],
      np.full(full, parent_score),
      z - parent_score,
      np.broadcast_to(column_max[:, None], full),
      np.broadcast_to(column_mean[:, None], full),
      z - column_mean[:, None],
      rank,
      np.full(full, sib[-1]),
      np.broadcast_to((n_values / widest)[:, None], full),
    ],
    axis=-1,
  )
  return out.reshape(num_f * width, NUM_FEATURES).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RankerWeights:
  """A two-layer perceptron over standardised features; `logits(x)` is the log-odds of "on a planted path"."""

  mean: np.ndarray  # [K] feature means of the training rows
  scale: np.ndarray  # [K] feature standard deviations (1 where constant)
  w1: np.ndarray  # [K, H]
  b1: np.ndarray  # [H]
  w2: np.ndarray  # [H, H]
  b2: np.ndarray  # [H]
  w3: np.ndarray  # [H]
  b3: np.ndarray  # []
  names: tuple[str, ...] = FEATURES  # the features it reads, in order

  def __post_init__(self):
    if tuple(self.names) != FEATURES:
      raise ValueError(f"ranker weights for features {tuple(self.names)}, this version reads {FEATURES}")

  def logits(self, x: np.ndarray) -> np.ndarray:
    """`[N]` log-odds of rows `x` `[N, K]` (float64)."""
    h = (np.asarray(x, np.float64) - self.mean) / self.scale
    h = np.tanh(h @ self.w1 + self.b1)
    h = np.tanh(h @ self.w2 + self.b2)
    return h @ self.w3 + self.b3


def save(weights: RankerWeights, path: str) -> None:
  """Writes `weights` to an `.npz` file (atomically: a crash leaves the old file)."""
  arrays = {f.name: np.asarray(getattr(weights, f.name)) for f in dataclasses.fields(weights) if f.name != "names"}
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, names=np.asarray(weights.names), **arrays)
  os.replace(tmp, path)


def _shapes(fields: dict) -> dict[str, tuple]:
  """The shape each of `RankerWeights`' arrays must have, given the hidden width `w1` shows."""
  k, h = NUM_FEATURES, (np.shape(fields["w1"]) + (0, 0))[1]
  return dict(mean=(k,), scale=(k,), w1=(k, h), b1=(h,), w2=(h, h), b2=(h,), w3=(h,), b3=())


def load(path: str | None = None) -> RankerWeights:
  """Reads weights written by `save` (default: the packaged ranker, `PACKAGED`); ValueError naming the file unless it
  holds them (an audit: a CSV was numpy's `allow_pickle` hint, an .npz of other arrays a KeyError). Never unpickles."""
  path = path or PACKAGED
  what = f"ranker weights {path!r}"
  make = "make them with python -m experiments.train_ranker"
  if not os.path.exists(path):
    raise ValueError(f"{what} do not exist ({make})")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{what}: not an .npz archive, so not a ranker's weights ({make})")
  want = ["names"] + [f.name for f in dataclasses.fields(RankerWeights) if f.name != "names"]
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in want if k not in z.files]
      fields = {} if missing else {k: z[k] for k in want}
  except Exception as err:  # noqa: BLE001 (a damaged or foreign file is the user's input problem)
    raise ValueError(f"{what}: cannot be read ({unreadable(err)})") from None
  if missing:
    raise ValueError(f"{what}: not a ranker's weights (it has no {', '.join(missing)} arrays; {make})")
  names = fields.pop("names")
  wrong = [f"{k} {np.shape(fields[k])}, not {s}" for k, s in _shapes(fields).items() if np.shape(fields[k]) != s]
  if wrong or names.ndim != 1 or not np.issubdtype(names.dtype, np.str_):
    raise ValueError(f"{what}: not a ranker's weights ({'; '.join(wrong) or 'names are not strings'})")
  fields["b3"] = float(fields["b3"])
  try:
    return RankerWeights(names=tuple(str(n) for n in names), **fields)
  except ValueError as err:
    raise ValueError(f"{what}: {err}") from None


def unreadable(err: Exception) -> str:
  """Why numpy could not read an .npz, for a user: an object array (which is never unpickled) as such, not numpy's
  hint to load it with `allow_pickle`."""
  if "pickle" in str(err):
    return "it holds object arrays (Python objects), which are never loaded"
  return f"{type(err).__name__}: {err}"


def weights_id(path: str | None = None) -> str:
  """`sha256:` and the first 12 hex digits of the weights file's bytes (default the packaged one): what a
  benchmark row records, so that rows of a refitted ranker are told apart from the old one's."""
  path = path or PACKAGED
  if not os.path.exists(path):
    raise ValueError(f"ranker weights {path!r} do not exist (make them with python -m experiments.train_ranker)")
  with open(path, "rb") as handle:
    return "sha256:" + hashlib.sha256(handle.read()).hexdigest()[:12]


# The learned value's default depth preference (benchmarks/README.md, *A depth preference for spaces searched to
# depth 4*): DEPTH_PREFERENCE log-odds per level of a drill-down's depth in a space searched to DEPTH_FROM or deeper
# (a plant there needs one more right drill-down, and the value rates a path's first steps like its end), none in
# shallower spaces (where it cost `wide` at small budgets). Chosen on training worlds only.
DEPTH_FROM, DEPTH_PREFERENCE = 4, 1.0


def default_depth(max_depth: int) -> float:
  """The depth preference of a space searched to `max_depth` when none is given (`depth=None`)."""
  return DEPTH_PREFERENCE if max_depth >= DEPTH_FROM else 0.0


def learned_ranker(
  weights: RankerWeights | None = None, *, depth: float | None = None, max_depth: int | None = None
) -> Ranker:
  """The frontier ranking by `weights`' log-odds (default: the packaged ranker), plus `depth` log-odds per level of
  the drill-downs' depth (`max_depth`: the space's, by which the observation's depth channel is divided), so that
  best-first leans toward finishing a path (`depth` > 0) or toward breadth (< 0); None: `default_depth(max_depth)`.
  Without `max_depth` the ranking is the value alone (the training walks' behaviour, `collect`), and a `depth`
  other than 0 is refused (its levels could not be read)."""
  weights = weights if weights is not None else load()
  if max_depth is None:
    if depth:
      raise ValueError("learned: a depth preference needs the space's max_depth")
    depth, max_depth = 0.0, 1
  depth = default_depth(max_depth) if depth is None else depth
  if not np.isfinite(depth):
    raise ValueError(f"learned: depth must be a finite number, got {depth!r}")

  def rank(obs: np.ndarray, parent_score: float) -> np.ndarray:
    scores = weights.logits(features(obs, parent_score))
    return scores + depth * (round(float(obs[DEPTH, 0, 0]) * max_depth) + 1.0) if depth else scores

  return rank


def check_drop(drop) -> None:
  """ValueError naming the names in `drop` that are not `FEATURES` (`fit`'s, and the training CLI's before it
  collects)."""
  unknown = sorted(set(drop) - set(FEATURES))
  if unknown:
    raise ValueError(f"unknown features to drop {unknown}; the features are {FEATURES}")


def fit(
  x: np.ndarray,
  y: np.ndarray,
  *,
  seed: int,
  hidden: int = 32,
  steps: int = 2000,
  learning_rate: float = 3e-3,
  weight_decay: float = 1e-4,
  sample_weight: np.ndarray | None = None,
  drop: tuple[str, ...] = (),
) -> RankerWeights:
  """Fits a `RankerWeights` to rows `x` `[N, K]` and labels `y` `[N]` in {0, 1} (logistic loss, classes balanced).

  Full-batch AdamW on the standardised rows; deterministic given `seed`. `drop` names features the ranker must not
  read (an ablation): they are held at 0 in training and their input weights are 0, so they are ignored at use.
  """
  x, y = np.array(x, np.float32), np.asarray(y, np.float32)
  if x.ndim != 2 or x.shape[1] != NUM_FEATURES or len(x) != len(y):
    raise ValueError(f"fit needs x [N, {NUM_FEATURES}] and y [N], got {x.shape} and {y.shape}")
  check_drop(drop)
  dropped = np.asarray([f in drop for f in FEATURES])
  x[:, dropped] = 0.0
  if not np.isfinite(x).all():
    raise ValueError("fit: the feature rows contain a non-finite value")
  pos = float(y.sum())
  if pos == 0 or pos == len(y):
    raise ValueError(f"fit needs both labels, got {int(pos)} positives of {len(y)} rows")
  sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float32)
  neg_w, pos_w = (sw * (1 - y)).sum(), (sw * y).sum()
  if not (pos_w > 0 and neg_w > 0):  # a bootstrap draw (`fit_bagged`) without one label's rows: all-NaN weights
    raise ValueError(
      f"fit needs both labels with weight, got {float(pos_w):g} on positives and {float(neg_w):g} on negatives"
    )
  w = sw * np.where(y > 0, 0.5 / pos_w, 0.5 / neg_w)  # each class carries half the loss
  mean = x.mean(axis=0)
  scale = np.where(x.std(axis=0) > 1e-6, x.std(axis=0), 1.0)
  xs = jnp.asarray((x - mean) / scale)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = {
    "w1": jax.random.normal(k1, (NUM_FEATURES, hidden)) / np.sqrt(NUM_FEATURES),
    "b1": jnp.zeros(hidden),
    "w2": jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden),
    "b2": jnp.zeros(hidden),
    "w3": jax.random.normal(k3, (hidden,)) / np.sqrt(hidden),
    "b3": jnp.zeros(()),
  }

  def loss(p):
    h = jnp.tanh(xs @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    logit = h @ p["w3"] + p["b3"]
    return jnp.sum(w * optax.sigmoid_binary_cross_entropy(logit, y))

  opt = optax.adamw(learning_rate, weight_decay=weight_decay)

  @jax.jit
  def train(p):
    def body(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
    return p

  p = jax.device_get(train(params))
  p["w1"] = np.where(dropped[:, None], 0.0, p["w1"])
  return RankerWeights(
    mean=mean.astype(np.float64),
    scale=scale.astype(np.float64),
    **{k: np.asarray(v, np.float64) for k, v in p.items() if k != "b3"},
    b3=float(p["b3"]),
  )


def merge(members: Iterable[RankerWeights]) -> RankerWeights:
  """One `RankerWeights` whose log-odds are the mean of `members`' (an ensemble, exactly, as one network).

  The members must share their standardisation (`fit` on the same rows: only the sample weights or the seed differ,
  as in bagging). Their hidden units sit side by side (`w1`, `b1`, `b2`, `w3` concatenated, `w2` block diagonal,
  so no unit reads another member's), the output weights divided by their number.
  """
  members = list(members)
  if not members:
    raise ValueError("merge needs at least one ranker")
  first = members[0]
  for m in members[1:]:
    if m.names != first.names or not (np.array_equal(m.mean, first.mean) and np.array_equal(m.scale, first.scale)):
      raise ValueError("merge: the rankers must read the same features, standardised alike (fitted on the same rows)")
  n = len(members)
  w2 = np.zeros((sum(m.w2.shape[0] for m in members),) * 2)
  at = 0
  for m in members:
    h = m.w2.shape[0]
    w2[at : at + h, at : at + h] = m.w2
    at += h
  return RankerWeights(
    mean=first.mean,
    scale=first.scale,
    w1=np.concatenate([m.w1 for m in members], axis=1),
    b1=np.concatenate([m.b1 for m in members]),
    w2=w2,
    b2=np.concatenate([m.b2 for m in members]),
    w3=np.concatenate([m.w3 for m in members]) / n,
    b3=float(np.mean([m.b3 for m in members])),
    names=first.names,
  )


def fit_bagged(
  x: np.ndarray,
  y: np.ndarray,
  *,
  groups: np.ndarray,
  members: int,
  seed: int,
  strata: np.ndarray | None = None,
  sample_weight: np.ndarray | None = None,
  **fit_args,
) -> RankerWeights:
  """Bagging over groups of rows (Breiman 1996): `members` fits of `fit`, each on every row weighted by how often a
  bootstrap resample of the groups drew the row's group, merged into one ranker (`merge`).

  `groups` `[N]` names the unit the ranker may overfit (a training world); the resample draws, within each value of
  `strata` `[N]` (default one stratum), as many groups as it holds, with replacement (so a group value need only be
  unique within its stratum: world 3 of one rows file is not world 3 of another). Member `m` resamples with
  `numpy.random.default_rng(seed + m)` and fits with seed `seed + m`; `fit_args` go to every `fit`.
  """
  groups = np.asarray(groups)
  strata = np.zeros(len(groups), np.int64) if strata is None else np.asarray(strata)
  if members < 1 or groups.shape != (len(y),) or strata.shape != (len(y),):
    raise ValueError(f"fit_bagged needs members >= 1 and groups, strata [{len(y)}], got {members}, {groups.shape}")
  sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
  fits = []
  for m in range(members):
    rng = np.random.default_rng(seed + m)
    draws = np.zeros(len(y))
    for stratum in np.unique(strata):
      rows = strata == stratum
      ids, which = np.unique(groups[rows], return_inverse=True)
      draws[rows] = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))[which]
    weight = sw * draws
    labelled = float((weight * np.asarray(y)).sum()), float((weight * (1 - np.asarray(y))).sum())
    if not (labelled[0] > 0 and labelled[1] > 0):  # a resample that drew no group holding one of the labels
      missing = "positives" if labelled[0] <= 0 else "negatives"
      raise ValueError(
        f"fit_bagged member {m} (seed {seed + m}) resampled no group with {missing} ({labelled[0]:g} weight on "
        f"positives, {labelled[1]:g} on negatives): use more groups or another seed"
      )
    fits.append(fit(x, y, seed=seed + m, sample_weight=weight, **fit_args))
  return merge(fits)


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
  """Weighted area under the ROC curve (ties count half)."""
  order = np.argsort(scores, kind="stable")
  s, y, w = scores[order], labels[order].astype(bool), weights[order]
  neg_below = np.cumsum(np.where(~y, w, 0.0))
  _, first = np.unique(s, return_index=True)
  # for ties, count negatives strictly below plus half of the tied ones
  tie_start = np.repeat(first, np.diff(np.append(first, len(s))))
  below = np.where(tie_start > 0, neg_below[tie_start - 1], 0.0)
  tie_end = np.repeat(np.append(first[1:], len(s)) - 1, np.diff(np.append(first, len(s))))
  tied = neg_below[tie_end] - below
  return float(np.sum(np.where(y, w * (below + 0.5 * tied), 0.0)) / (w[y].sum() * w[~y].sum()))


def on_path(targets: np.ndarray, planted: np.ndarray) -> np.ndarray:
  """`[N]` bool: target cohort codes `[N, F]` (-1 = all) whose filters are a subset of some planted cohort's
  `[E, F]`."""
  if len(planted) == 0:
    return np.zeros(len(targets), bool)
  on = targets[:, None, :] >= 0  # [N, 1, F]
  agree = targets[:, None, :] == planted[None, :, :]  # [N, E, F]
  return np.any(np.all(~on | agree, axis=-1), axis=-1)


def planted_codes(space: Space, truth: Iterable) -> np.ndarray:
  """`[E, F]` int64: the cohorts of `truth` (planted effects with a `cohort` dict) as filter codes of `space`'s cube."""
  num_f = len(space.cube.meta.filter_names)
  return np.asarray([filters_to_codes(space.cube.meta, e.cohort) for e in truth], np.int64).reshape(-1, num_f)


def drilldown_labels(space: Space, planted: np.ndarray, filters: tuple, actions: Iterable[int]) -> np.ndarray:
  """`[A]` bool: `on_path` against `planted` (`planted_codes`) of the cohorts the drill-downs `actions` of the
  cohort `filters` reach."""
  acts = np.asarray(actions, np.int64)
  f, v = np.divmod(acts, space.env.shape.num_values + 1)
  targets = np.tile(np.asarray(filters[: planted.shape[1]], np.int64), (len(acts), 1))
  targets[np.arange(len(acts)), f] = v
  return on_path(targets, planted)


def _noisy(walk: Ranker, noise: float, rng: np.random.Generator) -> Ranker:
  """`walk` plus uniform noise of width `noise` from `rng` (the training walks' exploration)."""

  def rank(obs: np.ndarray, parent_score: float) -> np.ndarray:
    scores = np.asarray(walk(obs, parent_score), np.float64)
    return scores + noise * rng.random(scores.shape)

  return rank


def collect(
  space: Space,
  truth: Iterable,
  *,
  budget: int,
  seed: int,
  noise: float = 0.05,
  negatives: float = 0.05,
  behaviour: Ranker | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Training rows from one world: (features `[N, K]`, labels `[N]`, weights `[N]`).

  Runs `frontier` for `budget` queries ranked by `behaviour` (default the pixel
  ranking `pixel_ranker(LIFT)`: the heuristic's walk, a warm start; a
  `learned_ranker`: the learned search's own walk, a self-play round) plus
  uniform noise of width `noise` in the ranking's units (seeded), and turns
  every drill-down it reveals into a row labelled by `on_path` against `truth`
  (planted effects with a `cohort` dict). Every positive is kept, and a
  `negatives` share of the negatives (drawn with the seed), weighted
  1 / `negatives` so the rows stand for all of them.
  """
  if not 0 < negatives <= 1:
    raise ValueError(f"collect: negatives is the share of negative rows kept, in (0, 1], got {negatives!r}")
  if not noise >= 0:
    raise ValueError(f"collect: noise must be >= 0, got {noise!r}")
  rng = np.random.default_rng([seed, 18])
  planted = planted_codes(space, truth)
  walk = behaviour or pixel_ranker(LIFT)
  rows: list[tuple] = []

  def watch(filters: tuple, obs: np.ndarray, own: float, actions: list[int]) -> None:
    acts = np.asarray(actions, np.int64)
    label = drilldown_labels(space, planted, filters, acts)
    keep = label | (rng.random(len(acts)) < negatives)
    x = features(obs, own)[acts[keep]]
    rows.append((x, label[keep], np.where(label[keep], 1.0, 1.0 / negatives)))

  frontier(space, budget=budget, seed=seed, ranker=_noisy(walk, noise, rng), watch=watch)
  if not rows:
    return np.zeros((0, NUM_FEATURES), np.float32), np.zeros(0, bool), np.zeros(0)
  x, y, w = (np.concatenate(parts) for parts in zip(*rows, strict=True))
  return x, y, w


@dataclasses.dataclass(frozen=True)
class Positions:
  """Visited cohorts of one frontier walk, as an agent would be taught from them (`collect_positions`)."""

  obs: np.ndarray  # [N, channels, F, C + 1] float32: the cohort's observation
  legal: np.ndarray  # [N, A] bool: its legal actions
  marked: np.ndarray  # [N, A] bool: its drill-downs on a path to a planted effect
  actions: np.ndarray  # [N, K] int32: drill-downs sampled for a label (every marked one first, up to K)
  labels: np.ndarray  # [N, K] float32: their marks
  weights: np.ndarray  # [N, K] float32: the position's weight on each (0 pads a row with fewer drill-downs)
  scores: np.ndarray  # [N] float64: the cohort's own score as the walk passed it to the ranking (`frontier.Ranker`)


def collect_positions(
  space: Space,
  truth: Iterable,
  *,
  budget: int,
  seed: int,
  noise: float = 0.5,
  unmarked: float = 0.1,
  samples: int = 8,
  behaviour: Ranker | None = None,
) -> Positions:
  """The positions of one world's frontier walk with their on-path drill-downs (for an agent; `collect`'s twin).

  The walk is `collect`'s: `frontier` for `budget` queries ranked by `behaviour` (default the packaged learned
  ranking without the depth preference, the walk the `muzero` method refines in spaces to depth 3; the recipes'
  data were collected so) plus uniform noise of width `noise`. Every visited cohort with
  at least one drill-down on a path to a planted effect (`drilldown_labels`) is kept, and an `unmarked` share of
  the others, all weighted 1: the agent's search only orders the drill-downs of one cohort, which the marked
  positions teach, so the unmarked ones are not weighted up to stand for all of them (as `collect`'s negatives
  are). A position's marks and samples range over all its drill-downs, those to cohorts the walk already visited
  included (the agent orders a cohort's moves; which of them the frontier still queues is the search's business).
  Each kept position samples `samples` of its drill-downs: its marked ones first (in action order, so beyond
  `samples` the lowest-indexed), the rest drawn at random (all with the seed).
  """
  if not 0 < unmarked <= 1:
    raise ValueError(f"collect_positions: unmarked is the share of unmarked positions kept, in (0, 1], got {unmarked}")
  if samples < 1 or not noise >= 0:
    raise ValueError(f"collect_positions: samples must be >= 1 and noise >= 0, got {samples} and {noise!r}")
  rng = np.random.default_rng([seed, 29])
  planted = planted_codes(space, truth)
  walk = behaviour or learned_ranker(_loaded(None))
  c = space.env.shape.num_values
  kept: list[tuple] = []

  def watch(filters: tuple, obs: np.ndarray, own: float, actions: list[int]) -> None:
    del actions
    legal = obs[LEGAL].reshape(-1) > 0
    drill = drill_down_actions(filters, legal, c)
    label = drilldown_labels(space, planted, filters, drill)
    if not label.any() and rng.random() >= unmarked:
      return
    marked = np.zeros(legal.shape, bool)
    marked[drill[label]] = True
    pos, neg = drill[label], rng.permutation(drill[~label])
    chosen = np.concatenate([pos, neg])[:samples]
    acts = np.zeros(samples, np.int32)
    acts[: len(chosen)] = chosen
    labels = np.zeros(samples, np.float32)
    labels[: len(chosen)] = np.isin(chosen, pos)
    weights = np.zeros(samples, np.float32)
    weights[: len(chosen)] = 1.0
    kept.append((obs.astype(np.float32), legal, marked, acts, labels, weights, float(own)))

  frontier(space, budget=budget, seed=seed, ranker=_noisy(walk, noise, rng), watch=watch)
  if not kept:
    num_a = space.env.num_actions
    obs_shape = (len(CHANNELS), space.env.shape.num_filters, c + 1)
    z = np.zeros((0, samples))
    return Positions(
      np.zeros((0, *obs_shape), np.float32),
      np.zeros((0, num_a), bool),
      np.zeros((0, num_a), bool),
      z.astype(np.int32),
      z.astype(np.float32),
      z.astype(np.float32),
      np.zeros(0),
    )
  return Positions(*(np.stack(parts) for parts in zip(*kept, strict=True)))


@functools.lru_cache(maxsize=8)
def _loaded(path: str | None) -> RankerWeights:
  return load(path)


def learned(
  space: Space,
  *,
  budget: int,
  seed: int,
  progress: Progress | None = None,
  weights: str | None = None,
  depth: float | None = None,
) -> SearchResult:
  """`frontier` ranked by a learned value (see module docstring); `weights`: an `.npz` path, default the packaged one;
  `depth`: log-odds added per level of a drill-down's depth (`learned_ranker`; 0: the value alone; None: the
  default for the space's depth, `default_depth`)."""
  ranker = learned_ranker(_loaded(weights), depth=depth, max_depth=space.max_depth)
  result = frontier(space, budget=budget, seed=seed, progress=progress, ranker=ranker)
  return dataclasses.replace(result, method="learned")
