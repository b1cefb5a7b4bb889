"""Random worlds: a seed draws a case table, its schema and its planted truth from a family.

`synthetic.make_cases` keeps one fixed schema in every seed (and, with its
`cohorts="fixed"` preset, the same planted cohorts), so an agent can score by
memorizing the schema. Here everything is drawn
(docs/design.md, "Benchmarks and honesty": training and evaluation worlds
share neither seeds nor schemas; "What a finding is": the test, newness).

What is random, per (seed, family, rows), from one `numpy.random.default_rng`:
- Dimensions (a family-dependent count, 4-60) with 2-40 categories each
  (log-uniform) and skewed shares (Zipf exponent 0.2-1.3 with jitter, in a
  random label order). Each column after the first is a root (drawn alone,
  50%), correlated with an earlier one (30%: P(child | parent) = (1 - rho)
  base + rho q_parent, rho 0.3-0.8, q ~ Dirichlet(0.5)), or nested in an
  earlier one of at most 20 categories (20%: each parent value owns 1-4 child
  values, so the child's value determines the parent's, like surgeon within
  site).
- Protected columns (1-6) with 2-6 groups (Zipf exponent 0-1.2), 40% of them
  after the first correlated with an earlier protected column (like race,
  ethnicity, language), about half with 0.5-3% missing values.
- Measures (2-8): log-normal durations (tested on the log scale), counts
  (gamma-Poisson, i.e. negative binomial, tested on the linear scale:
  `Schema.log_scale` False, zeros occur) and binary rates, each with 0-4%
  missing values. Log-normal values are recorded to 3 decimal places
  (`recorded`), so that the table's bits, which the row split hashes, do not
  depend on the machine's `exp`.
- Names: every column is `col_` plus three syllables, every category `v` plus
  two, so nothing can key on a name. The first syllable of a column name comes
  from the half of the syllable list that belongs to the seed's split
  (`split_of`), so no evaluation schema can equal a training one.

Base process: each measure depends on 1-5 random dimensions (per-category
effects on the log mean, log rate or logit, N(0, tau), tau 0.05-0.35) plus
noise, never on a protected column; protected columns are drawn independently
of every dimension. So without a plant no group differs from the rest of any
cohort except by chance. The `confounded` family is the exception: one or two
protected groups are over-represented in the values of a root dimension that
raise a measure (weights exp(lambda * effect / sd)), which makes raw gaps that
vanish within that dimension's strata; the dimension is in `schema.adjusters`
and each raw root gap with |z| > 5 is listed in `World.confounders`.

Planted effects: at a random cohort of a depth drawn from the family's
(dimension filters only, values that survive `build_cube`'s folding at 12
categories, no filter nested in another; deeper cohorts favour large values so
they keep rows), a random non-largest protected group (so a two-group column's
tested group is the planted one), measure (distinct (measure, protected) pairs
where possible) and sign.
Each is calibrated on the generated rows: the effect size is bisected until
the group-versus-rest |z| at its own cohort (Welch on the test scale turned
into the normal equivalent of its two-sided p, or the pooled two-proportion z,
as in `cube_env.stats`) sits near a target drawn inside the band (default
[6.5, 10]); a cohort that cannot reach the band with a plausible effect (log
ratio or log rate ratio <= 0.7, risk difference <= 0.3), or whose calibrated
effect is not meaningful (|relative difference| group versus rest on the
natural scale, as `confirm` reports it, below `MIN_RELATIVE_DIFF` = 0.2, twice
the AHRQ reporting floor that discovery applies, so that a confirmed finding
can report it), is re-drawn. With 50,000 rows a z of 6.5-10 at the root
alone is a gap of a few percent, so root and other large-cohort plants land on
the rarer groups. A log
measure's effect adds to the log of the group's rows (`effect` = log ratio of
geometric means), a count's multiplies their rate (the same uniforms through
the Poisson quantile; `effect` = realized mean difference), a binary one flips
exactly round(|effect| n) of the group's recorded outcomes (`effect` = risk
difference). Then the cube is built and the project's own definition
(`cohort_table`, the batched `cohort_stats`, with the family's `z_screen`)
must call every planted test significant and new, and every effect must still
be in its band after the others were planted; otherwise the whole world is
re-drawn (`WORLD_MAX_ATTEMPTS`, then ValueError). Correlated protected columns
echo a plant (weaker gaps of the correlated groups, not in the truth), and
correlated or nested dimensions carry it into related cohorts, as in
`synthetic`.

Masked effects (`masked`): a checkerboard over two values each (counts within
1.6x of each other) of 2 or 3 dimensions not nested in one another, on a
log-normal or binary measure. Cell effects are sign * X / n_cell (sign the
product of one +-1 per column; binary: exactly X flips per cell), so the
group's shifts sum to zero in every lower-order marginal and at the root (as
`synthetic`'s masked scenario); X is bisected until every cell is in the band
(and meaningful, as above), and every marginal must show |z| < 2, else re-draw. Order 3 needs about
50,000 rows; with fewer, attempts that drew order 3 fail and order-2 worlds
are what survive.

Families (`FAMILIES`): narrow, standard, wide, deep, masked, null,
confounded; see `Family`. Splits: `world_seeds("train" | "eval", count)`
gives disjoint seed ranges, and `split_of(seed)` picks the name vocabulary.
The generator of attempt a is `default_rng([seed, crc32(family), rows, a])`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from cube_env.data.ingest import build_cube, filters_to_codes
from cube_env.data.schema import Schema
from cube_env.data.synthetic import PlantedEffect

# The newness check needs the layers above cube_env.data (docs/design.md, Layout and data flow); neither imports
# this module, so there is no cycle.
from cube_env.discovery.cohorts import cohort_table
from cube_env.environment.params import bucketed_shape, make_params
from cube_env.environment.pools import CubeSet, CubeTask
from cube_env.environment.pools import make_cubes as make_synthetic_cubes

SPLITS = ("train", "eval")
TRAIN_SEED_BASE = 1_000_000  # world_seeds("train", k) = TRAIN_SEED_BASE + range(k)
EVAL_SEED_BASE = 1 << 30  # seeds from here on are evaluation worlds (names from the other vocabulary half)
MAX_CATEGORIES = 12  # `build_cube`'s default: planted values must survive its folding
WORLD_MAX_ATTEMPTS = 12  # whole-world regenerations (cube check failed, masked marginals not quiet)
DRAW_MAX = 300  # cohort draws per planted effect within one attempt
MASKED_QUIET_Z = 2.0
MAX_LOG_EFFECT = 0.7  # plausible |log ratio| (log measures) or |log rate ratio| (counts)
MAX_RISK_DIFFERENCE = 0.3
# Bumped when a family's generator changes; benchmark rows record it. 2: deep worlds 20-30 dimensions; 3: log-normal
# measures recorded to DECIMALS places, so one seed draws one table on every machine.
VERSION = 3
DECIMALS = 3  # a log-normal measure's recorded places (`recorded`)
MIN_SIDE = 40  # rows on each side of a planted test (group, rest)
MIN_RELATIVE_DIFF = 0.2  # a planted |relative difference| at its cohort: twice discovery's reporting floor (AHRQ 10%)
MEASURE_KINDS = ("lognormal", "count", "binary")

_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
SYLLABLES = tuple(c + v for c in _CONSONANTS for v in _VOWELS)  # 75
_HALF = len(SYLLABLES) // 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
  """Parameters of a family of worlds (ranges are inclusive).

  Attributes:
    name: the family's key in `FAMILIES`.
    dimensions: (min, max) dimension columns.
    categories: (min, max) categories per dimension (log-uniform).
    protected: (min, max) protected columns.
    groups: (min, max) groups per protected column.
    measures: (min, max) measures.
    plants: (min, max) planted effects.
    depths: depths a planted cohort is drawn from (uniformly).
    masked: (min, max) order of the masked checkerboard (columns), or None.
    confounders: number of (protected group, dimension) tilts, 0 for none.
    rows: default number of rows.
    z_band: the band each planted |z| is calibrated into at its cohort.
    z_screen: screening |z| of the newness check (`cohort_stats`).
  """

  name: str
  dimensions: tuple[int, int]
  categories: tuple[int, int] = (2, 40)
  protected: tuple[int, int] = (1, 6)
  groups: tuple[int, int] = (2, 6)
  measures: tuple[int, int] = (2, 8)
  plants: tuple[int, int] = (1, 3)
  depths: tuple[int, ...] = (0, 1, 2, 3)
  masked: tuple[int, int] | None = None
  confounders: int = 0
  rows: int = 50_000
  z_band: tuple[float, float] = (6.5, 10.0)
  z_screen: float = 4.0


FAMILIES = {
  f.name: f
  for f in (
    Family(name="narrow", dimensions=(4, 8), plants=(1, 2), depths=(0, 1, 2)),
    Family(name="standard", dimensions=(7, 12), protected=(1, 4)),  # 8-16 filter columns: depth 3 enumerable
    Family(name="wide", dimensions=(40, 60), depths=(1, 2, 3)),
    # deep: 20-30 dimensions, so that enumerating depth 4 costs >= 100x the largest fixed budget (3,000 queries)
    Family(name="deep", dimensions=(20, 30), plants=(1, 2), depths=(4,)),
    Family(name="masked", dimensions=(6, 16), plants=(0, 0), masked=(2, 3)),
    Family(name="null", dimensions=(7, 12), protected=(1, 4), plants=(0, 0)),
    Family(name="confounded", dimensions=(7, 12), protected=(1, 4), plants=(0, 0), confounders=2),
  )
}


@dataclasses.dataclass(frozen=True, eq=False)
class World:
  """One drawn world.

  Attributes:
    df: the case table [rows, columns] (categories as strings, None where
      missing; measures float64, NaN where missing), columns in random order.
    schema: roles of its columns; `adjusters` set in confounded worlds.
    truth: planted effects (`kind` "planted" or "masked"), for `score_findings`.
    family, seed, rows: what drew it; split: `split_of(seed)`.
    z: the group-versus-rest z of each truth entry at its cohort, as calibrated.
    confounders: raw root gaps that the adjusters explain (dicts with
      protected, group, measure, z, explained_by).
    measure_kinds: measure -> "lognormal" | "count" | "binary".
    parents: column -> (relation "correlated" | "nested", earlier column).
    drivers: measure -> the dimensions its base process depends on.
  """

  df: pd.DataFrame
  schema: Schema
  truth: list[PlantedEffect]
  family: str
  seed: int
  rows: int
  split: str
  z: tuple[float, ...]
  confounders: tuple[dict, ...]
  measure_kinds: dict[str, str]
  parents: dict[str, tuple[str, str]]
  drivers: dict[str, tuple[str, ...]]


def split_of(seed: int) -> str:
  """The split a seed belongs to: "eval" from `EVAL_SEED_BASE` on, else "train"."""
  return "eval" if seed >= EVAL_SEED_BASE else "train"


def world_seeds(split: str, count: int, family: str = "standard") -> list[int]:
  """`count` seeds of a split: train from `TRAIN_SEED_BASE`, eval from `EVAL_SEED_BASE` (disjoint ranges)."""
  _family(family)
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if count < 0 or count > EVAL_SEED_BASE - TRAIN_SEED_BASE:
    raise ValueError(f"count must be in [0, {EVAL_SEED_BASE - TRAIN_SEED_BASE}], got {count}")
  base = TRAIN_SEED_BASE if split == "train" else EVAL_SEED_BASE
  return [base + i for i in range(count)]


def _family(family: str) -> Family:
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r}; choose one of {tuple(FAMILIES)}")
  return FAMILIES[family]


# --- statistics (test scale) -------------------------------------------------------------------------------------


def group_z(values: np.ndarray, group: np.ndarray, *, binary: bool) -> float:
  """Group-versus-rest z on the test scale, NaN values left out (docs/design.md, What a finding is).

  Welch's t turned into the normal equivalent of its two-sided p-value, or the
  pooled two-proportion z (z^2 = Pearson's chi-square). 0 when a side has fewer
  than 2 values or there is no spread.
  """
  ok = ~np.isnan(values)
  a, b = values[ok & group], values[ok & ~group]
  if len(a) < 2 or len(b) < 2:
    return 0.0
  d = a.mean() - b.mean()
  if binary:
    pooled = (a.sum() + b.sum()) / (len(a) + len(b))
    se2 = pooled * (1 - pooled) * (1 / len(a) + 1 / len(b))
    return float(d / np.sqrt(se2)) if se2 > 0 else 0.0
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se2 = va + vb
  if se2 <= 0:
    return 0.0
  t = d / np.sqrt(se2)
  df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  return float(np.sign(t) * sps.norm.isf(np.exp(sps.t.logsf(abs(t), df))))


# --- drawing the table -----------------------------------------------------------------------------------------


def _categorical(rng, probs: np.ndarray) -> np.ndarray:
  """One draw per row of `probs` [n, k]; returns [n] int."""
  cum = np.cumsum(probs, axis=1)
  u = rng.random(len(probs)) * cum[:, -1]
  return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _shares(rng, k: int, *, exponent: tuple[float, float] = (0.2, 1.3)) -> np.ndarray:
  """Skewed shares of k categories (Zipf with jitter) in random order."""
  s = rng.uniform(*exponent)
  p = np.arange(1, k + 1) ** -s * np.exp(0.25 * rng.standard_normal(k))
  return rng.permutation(p / p.sum())


class _Names:
  """Unique neutral names: columns from the split's half of the syllables, categories from all."""

  def __init__(self, rng, split: str):
    self.rng = rng
    self.first = SYLLABLES[:_HALF] if split == "train" else SYLLABLES[_HALF:]
    self.used: set[str] = set()

  def column(self) -> str:
    while True:
      r = self.rng.integers(len(SYLLABLES), size=2)
      name = "col_" + self.first[self.rng.integers(len(self.first))] + SYLLABLES[r[0]] + SYLLABLES[r[1]]
      if name not in self.used:
        self.used.add(name)
        return name

  def categories(self, k: int) -> list[str]:
    picks = self.rng.choice(len(SYLLABLES) ** 2, size=k, replace=False)
    return ["v" + SYLLABLES[i // len(SYLLABLES)] + SYLLABLES[i % len(SYLLABLES)] for i in picks]


@dataclasses.dataclass
class _Col:
  name: str
  labels: list[str]
  table: np.ndarray  # root: shares [k]; dependent: P(value | parent value) [k_parent, k]
  relation: str = "root"  # root | correlated | nested
  parent: int | None = None  # index in its list (dimensions or protected)
  codes: np.ndarray | None = None  # [n] int, -1 = missing


def _dependent_table(rng, k_parent: int, *, max_k: int, nested: bool) -> np.ndarray:
  """P(child | parent) [k_parent, k]: nested (child values partition the parent's) or correlated."""
  if nested:
    per = rng.integers(1, 5, size=k_parent)
    while per.sum() > max_k:
      per[np.argmax(per)] -= 1
    owner = np.repeat(np.arange(k_parent), per)
    table = np.zeros((k_parent, len(owner)))
    for a in range(k_parent):
      table[a, owner == a] = _shares(rng, int(per[a]))
    return table
  k = int(np.clip(np.rint(np.exp(rng.uniform(np.log(2), np.log(max_k)))), 2, max_k))
  rho = rng.uniform(0.3, 0.8)
  return (1 - rho) * _shares(rng, k)[None, :] + rho * rng.dirichlet(np.full(k, 0.5), size=k_parent)


def _dimensions(rng, fam: Family, names: _Names) -> list[_Col]:
  """Dimension columns without their codes (`_draw_dimensions` fills them)."""
  k_dims = int(rng.integers(fam.dimensions[0], fam.dimensions[1] + 1))
  lo, hi = fam.categories
  cols: list[_Col] = []
  for i in range(k_dims):
    u = rng.random()
    if i > 0 and u < 0.5:
      j = int(rng.integers(i))
      nested = u < 0.2 and len(cols[j].labels) <= 20
      table = _dependent_table(rng, len(cols[j].labels), max_k=hi, nested=nested)
      col = _Col(names.column(), names.categories(table.shape[1]), table, "nested" if nested else "correlated", j)
    else:
      k = int(np.clip(np.rint(np.exp(rng.uniform(np.log(lo), np.log(hi)))), lo, hi))
      col = _Col(names.column(), names.categories(k), _shares(rng, k))
    cols.append(col)
  return cols


def _draw_dimensions(rng, cols: list[_Col], n: int, tilts: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
  """Codes of every dimension in order; `tilts[j] = (rows, shares)` redraws root column j for those rows."""
  for j, col in enumerate(cols):
    if col.parent is None:
      col.codes = rng.choice(len(col.labels), size=n, p=col.table)
      if j in tilts:
        rows, shares = tilts[j]
        col.codes[rows] = rng.choice(len(col.labels), size=int(rows.sum()), p=shares)
    else:
      col.codes = _categorical(rng, col.table[cols[col.parent].codes])


def _protected(rng, fam: Family, n: int, names: _Names) -> list[_Col]:
  k_prot = int(rng.integers(fam.protected[0], fam.protected[1] + 1))
  cols: list[_Col] = []
  for i in range(k_prot):
    k = int(rng.integers(fam.groups[0], fam.groups[1] + 1))
    base = _shares(rng, k, exponent=(0.0, 1.2))
    if i > 0 and rng.random() < 0.4:
      j = int(rng.integers(i))
      rho = rng.uniform(0.3, 0.7)
      table = (1 - rho) * base[None, :] + rho * rng.dirichlet(np.full(k, 0.5), size=len(cols[j].labels))
      table = np.maximum(table, 0.02)
      col = _Col(names.column(), names.categories(k), table, "correlated", j)
      col.codes = _categorical(rng, table[cols[j].codes])
    else:
      col = _Col(names.column(), names.categories(k), base)
      col.codes = rng.choice(k, size=n, p=base)
    cols.append(col)
  return cols


def _missing(rng, cols: list[_Col]) -> None:
  """0.5-3% missing values in about half of the protected columns (after the base process: no effect)."""
  for col in cols:
    if rng.random() < 0.5:
      col.codes = np.where(rng.random(len(col.codes)) < rng.uniform(0.005, 0.03), -1, col.codes)


def _labels(col: _Col) -> np.ndarray:
  out = np.asarray(col.labels, dtype=object)[np.maximum(col.codes, 0)]
  out[col.codes < 0] = None
  return out


@dataclasses.dataclass
class _Measure:
  name: str
  kind: str
  drivers: list[int]
  effects: list[np.ndarray]  # per driver, [categories] effect on the linear predictor
  level: float  # log median (lognormal), log mean rate (count) or base rate (binary)
  spread: float  # sd of the log (lognormal) or gamma shape of the rate (count)
  missing: float  # fraction of rows without the measure
  present: np.ndarray | None = None  # [n] bool
  state: np.ndarray | None = None  # lognormal: log values; count: rate; binary: 0/1 values
  u: np.ndarray | None = None  # count: quantile uniforms; binary: flip order keys

  def values(self, rows: np.ndarray | None = None) -> np.ndarray:
    """Test-scale values of `rows` (row indices; default all), NaN where absent."""
    rows = slice(None) if rows is None else rows
    v = sps.poisson.ppf(self.u[rows], self.state[rows]) if self.kind == "count" else self.state[rows]
    return np.where(self.present[rows], v, np.nan)

  def natural(self) -> np.ndarray:
    """The table's column: a log-normal measure's values recorded to `DECIMALS` places (`recorded`)."""
    v = self.values()
    return recorded(np.exp(v)) if self.kind == "lognormal" else v


def recorded(values: np.ndarray) -> np.ndarray:
  """Values as the table records them: rounded to `DECIMALS` places (NaN stays NaN).

  `np.exp` is not bit-identical across machines (numpy's AVX-512 kernel and glibc's differ in the last bit of
  some values), and the row split hashes the table's bits (`cube_env.data.holdout.split_rows`), so without
  the rounding one seed split its rows differently on two machines (benchmarks/README.md, *The same seed,
  another table*: same plants, another split). A last-bit difference now changes a recorded value only when
  it straddles a rounding boundary: below 1e-9 per value at these magnitudes (values up to a few thousand).
  Rounding is exact IEEE arithmetic (multiply, round to even, divide), the same on every machine.
  """
  return np.round(values, DECIMALS)


def content_id(df: pd.DataFrame, truth: Sequence[PlantedEffect]) -> str:
  """Content hash of a world: its table (every value, in row order) and its planted truth, `sha256:` + 12 hex.

  Benchmark rows record it (`world_sha256`), so rows of two different tables under one seed are told apart;
  `tests/test_worlds.py` pins it for two worlds.
  """
  digest = hashlib.sha256(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
  digest.update(repr(sorted(map(repr, truth))).encode())
  return "sha256:" + digest.hexdigest()[:12]


def _measures(rng, fam: Family, dims: list[_Col], names: _Names) -> list[_Measure]:
  """Measure specifications: kind, drivers and their effects (`_draw_measures` makes the values)."""
  k_meas = int(rng.integers(fam.measures[0], fam.measures[1] + 1))
  out = []
  for _ in range(k_meas):
    kind = MEASURE_KINDS[int(rng.choice(3, p=[0.45, 0.25, 0.30]))]
    n_drv = int(rng.integers(1, min(5, len(dims)) + 1))
    drivers = sorted(int(j) for j in rng.choice(len(dims), size=n_drv, replace=False))
    effects = [rng.normal(0.0, rng.uniform(0.05, 0.35), size=len(dims[j].labels)) for j in drivers]
    level = {
      "lognormal": np.log(rng.uniform(5, 300)),
      "count": np.log(rng.uniform(0.5, 6.0)),
      "binary": rng.uniform(0.04, 0.4),
    }[kind]
    spread = rng.uniform(0.3, 0.9) if kind == "lognormal" else rng.uniform(1.0, 8.0)
    missing = rng.uniform(0.005, 0.04) if rng.random() < 0.6 else 0.0
    out.append(_Measure(names.column(), kind, drivers, effects, float(level), float(spread), float(missing)))
  return out


def _draw_measures(rng, n: int, dims: list[_Col], meas: list[_Measure]) -> None:
  """The base process: each measure from its driving dimensions plus noise (never from a protected column)."""
  for m in meas:
    eta = sum(e[dims[j].codes] for j, e in zip(m.drivers, m.effects))
    m.present = rng.random(n) >= m.missing
    m.u = rng.random(n)
    if m.kind == "lognormal":
      m.state = m.level + eta + m.spread * rng.standard_normal(n)
    elif m.kind == "count":
      m.state = np.exp(m.level + eta) * rng.gamma(m.spread, 1.0 / m.spread, size=n)
    else:
      p = 1.0 / (1.0 + np.exp(-(np.log(m.level / (1 - m.level)) + eta)))
      m.state = (rng.random(n) < p).astype(float)


def _tilts(rng, fam: Family, dims: list[_Col], prot: list[_Col], meas: list[_Measure]) -> dict:
  """Confounding: root dimensions whose values that raise a measure are over-represented in a protected group.

  Returns {dimension index: (rows of the group [n] bool, tilted shares [k])}.
  """
  tilts = {}
  roots = [j for j, d in enumerate(dims) if d.relation == "root" and any(j in m.drivers for m in meas)]
  for _ in range(fam.confounders):
    if not roots:
      break
    j = int(rng.choice(roots))
    roots.remove(j)
    p = int(rng.integers(len(prot)))
    counts = np.bincount(prot[p].codes, minlength=len(prot[p].labels))
    g = int(rng.choice(np.argsort(-counts, kind="stable")[1:]))
    m = next(m for m in meas if j in m.drivers)
    effect = m.effects[m.drivers.index(j)]
    effect = (effect - effect.mean()) / max(effect.std(), 1e-9)
    w = dims[j].table * np.exp(rng.uniform(0.8, 1.5) * effect)
    tilts[j] = (prot[p].codes == g, w / w.sum())
  return tilts


# --- planting ----------------------------------------------------------------------------------------------------


def _kept_values(col: _Col) -> np.ndarray:
  """Codes of the categories that `build_cube` keeps unfolded (the 11 most frequent when there are more than 12)."""
  counts = np.bincount(col.codes[col.codes >= 0], minlength=len(col.labels))
  order = sorted(range(len(col.labels)), key=lambda c: (-counts[c], col.labels[c]))
  order = [c for c in order if counts[c] > 0]
  return np.asarray(order if len(order) <= MAX_CATEGORIES else order[: MAX_CATEGORIES - 1])


def _related(dims: list[_Col], a: int, b: int) -> bool:
  """a and b are nested one in the other (directly or through a chain of nesting)."""

  def up(j):
    out = set()
    while dims[j].relation == "nested":
      j = dims[j].parent
      out.add(j)
    return out

  return a in up(b) or b in up(a)


def _apply(m: _Measure, rows: np.ndarray, s: float) -> np.ndarray:
  """The test-scale values of `rows` (group rows of a cohort) after an effect of size s."""
  if m.kind == "lognormal":
    return m.state[rows] + s
  if m.kind == "count":
    return sps.poisson.ppf(m.u[rows], m.state[rows] * np.exp(s))
  values = m.state[rows].copy()
  ok = m.present[rows]
  k = int(round(abs(s) * ok.sum()))
  flip = np.flatnonzero(ok & (values == (0.0 if s > 0 else 1.0)))
  flip = flip[np.argsort(m.u[rows][flip], kind="stable")][:k]
  values[flip] = 1.0 - values[flip]
  return values


def _commit(m: _Measure, rows: np.ndarray, s: float) -> float:
  """Applies an effect to the state; returns the realized effect on the test scale."""
  if m.kind == "lognormal":
    m.state[rows] += s
    return s
  before = m.values(rows)
  if m.kind == "count":
    m.state[rows] *= np.exp(s)
  else:
    m.state[rows] = _apply(m, rows, s)
  return float(np.nanmean(m.values(rows) - before))


def _max_size(m: _Measure) -> float:
  return MAX_RISK_DIFFERENCE if m.kind == "binary" else MAX_LOG_EFFECT


def _values_with(m: _Measure, cohort: np.ndarray, group: np.ndarray, s: float, base=None) -> np.ndarray:
  """Test-scale values of a cohort (row indices) after an effect s on its group rows (`group` [len(cohort)] bool).

  `base`: `m.values(cohort)` if already computed (unchanged by s outside the group; a count's Poisson quantiles
  are slow).
  """
  values = m.values(cohort) if base is None else base.copy()
  values[group] = np.where(m.present[cohort[group]], _apply(m, cohort[group], s), np.nan)
  return values


def _relative_with(m: _Measure, cohort: np.ndarray, group: np.ndarray, s: float, base=None) -> float:
  """Group-versus-rest relative difference on the natural scale at a cohort after an effect s (as `confirm`)."""
  values = _values_with(m, cohort, group, s, base)
  g, r = np.nanmean(values[group]), np.nanmean(values[~group])
  if m.kind == "lognormal":
    return float(np.expm1(g - r))
  return float((g - r) / abs(r)) if r != 0 else float("inf")


def _meaningful(m: _Measure, cohort: np.ndarray, group: np.ndarray, s: float, base=None) -> bool:
  rel = _relative_with(m, cohort, group, s, base)
  return abs(rel) >= MIN_RELATIVE_DIFF and np.sign(rel) == np.sign(s)


def _z_with(m: _Measure, cohort: np.ndarray, group: np.ndarray, s: float, base=None) -> float:
  """Group-versus-rest z at a cohort after an effect s on its group rows (`_values_with`)."""
  return group_z(_values_with(m, cohort, group, s, base), group, binary=m.kind == "binary")


def _calibrate(z_of, target: float, top: float) -> float | None:
  """Size s in [0, top] * sign(target) with z_of(s) near target (bisection; z_of increasing in s)."""
  sign = np.sign(target)
  if sign * z_of(sign * top) < abs(target):
    return None
  lo, hi = 0.0, top
  for _ in range(40):
    mid = 0.5 * (lo + hi)
    z = sign * z_of(sign * mid)
    if abs(z - abs(target)) < 0.05:
      return sign * mid
    lo, hi = (mid, hi) if z < abs(target) else (lo, mid)
  return sign * 0.5 * (lo + hi)


def _in_band(z: float, band: tuple[float, float]) -> bool:
  return band[0] <= abs(z) <= band[1]


def _group_ok(m: _Measure, cohort: np.ndarray, group: np.ndarray) -> bool:
  present = m.present[cohort]
  n_g, n_r = int((group & present).sum()), int((~group & present).sum())
  if min(n_g, n_r) < MIN_SIDE:
    return False
  if m.kind == "binary":
    rate = np.nanmean(m.values(cohort))
    return min(n_g, n_r) * min(rate, 1 - rate) >= 10
  return True


def _mask(cols: list[_Col], filters: dict[int, int], n: int) -> np.ndarray:
  rows = np.ones(n, bool)
  for j, v in filters.items():
    rows &= cols[j].codes == v
  return rows


def _plant(rng, fam: Family, dims, prot, meas, used: set) -> tuple[PlantedEffect, float] | None:
  """Draws and calibrates one planted effect (applied to `meas`); None when no draw reaches the band."""
  n = len(prot[0].codes)
  kept = [_kept_values(d) for d in dims]
  shares = [np.bincount(d.codes, minlength=len(d.labels))[k] / n for d, k in zip(dims, kept)]
  depth = int(rng.choice(fam.depths))  # fixed for this effect: a failed deep draw must not fall back to a shallow one
  if depth > len(dims):
    return None
  # Deeper cohorts favour large values (and columns that have one) so that they keep enough rows.
  col_w = np.array([s.max() for s in shares]) ** (0.5 * depth)
  for _ in range(DRAW_MAX):
    cols = [int(j) for j in rng.choice(len(dims), size=depth, replace=False, p=col_w / col_w.sum())]
    if any(_related(dims, a, b) for i, a in enumerate(cols) for b in cols[i + 1 :]):
      continue
    filters = {}
    for j in cols:
      w = shares[j] ** (1.0 + 0.5 * depth)
      filters[j] = int(kept[j][rng.choice(len(w), p=w / w.sum())])
    p = int(rng.integers(len(prot)))
    counts = np.bincount(prot[p].codes[prot[p].codes >= 0], minlength=len(prot[p].labels))
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], prot[p].labels[c]))[1:]
    w = counts[order] ** (0.5 * depth)
    g = int(order[rng.choice(len(order), p=w / w.sum())])
    free = [k for k in range(len(meas)) if (k, p) not in used]
    k = int(rng.choice(free if free else len(meas)))
    m = meas[k]
    in_cohort = _mask(dims, filters, n)
    cohort = np.flatnonzero(in_cohort)
    group = prot[p].codes[cohort] == g
    if not _group_ok(m, cohort, group):
      continue
    # A parent must keep enough of the group outside the cohort for the child to be new (z_het >= z_screen).
    in_group = (prot[p].codes == g) & m.present
    n_g = int((in_group & in_cohort).sum())
    parents = [_mask(dims, {a: v for a, v in filters.items() if a != j}, n) for j in filters]
    if any(int((in_group & par & ~in_cohort).sum()) < 0.8 * n_g for par in parents):
      continue
    target = rng.choice([-1, 1]) * rng.uniform(fam.z_band[0] + 0.3, fam.z_band[1] - 0.3)
    base = m.values(cohort)
    s = _calibrate(lambda s, m=m, c=cohort, g=group, b=base: _z_with(m, c, g, s, b), target, _max_size(m))
    if s is None or not _in_band(_z_with(m, cohort, group, s, base), fam.z_band):
      continue
    if not _meaningful(m, cohort, group, s, base):
      continue
    effect = _commit(m, cohort[group], s)
    used.add((k, p))
    cohort_labels = {dims[j].name: dims[j].labels[v] for j, v in sorted(filters.items())}
    return PlantedEffect(cohort_labels, prot[p].name, prot[p].labels[g], m.name, effect), effect
  return None


def _balanced_pairs(col: _Col, kept: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
  """Pairs of kept values whose counts differ by at most 1.6x (cells of similar size), and the smaller count."""
  counts = np.bincount(col.codes, minlength=len(col.labels))
  pairs, sizes = [], []
  for i, a in enumerate(kept):
    for b in kept[i + 1 :]:
      lo, hi = sorted((counts[a], counts[b]))
      if lo > 0 and hi <= 1.6 * lo:
        pairs.append((int(a), int(b)))
        sizes.append(lo)
  return pairs, np.asarray(sizes, float)


def _masked(rng, fam: Family, dims, prot, meas) -> list[PlantedEffect] | None:
  """Draws a checkerboard whose cells are in the band and whose marginals are quiet; None if none found."""
  n = len(prot[0].codes)
  candidates = [k for k, m in enumerate(meas) if m.kind != "count"]
  balanced = [_balanced_pairs(d, _kept_values(d)) for d in dims]
  usable = [j for j, (pairs, _) in enumerate(balanced) if pairs]
  order = int(rng.integers(fam.masked[0], fam.masked[1] + 1))  # fixed: no fallback to a lower order
  if not candidates or len(usable) < order:
    return None
  # Columns and pairs favour large balanced values, so that every one of the 2^order cells keeps rows.
  col_w = np.array([balanced[j][1].max() for j in usable]) ** order
  for _ in range(DRAW_MAX):
    cols = [usable[i] for i in rng.choice(len(usable), size=order, replace=False, p=col_w / col_w.sum())]
    if any(_related(dims, a, b) or dims[a].parent == b or dims[b].parent == a for a in cols for b in cols if a != b):
      continue
    values = []
    for j in cols:
      pairs, sizes = balanced[j]
      w = sizes**2
      values.append(list(pairs[int(rng.choice(len(pairs), p=w / w.sum()))]))
    cell = _checkerboard(rng, fam, dims, prot, meas, candidates, cols, values, n)
    if cell is not None:
      return cell
  return None


def _checkerboard(rng, fam, dims, prot, meas, candidates, cols, values, n):
  p = int(rng.integers(len(prot)))
  counts = np.bincount(prot[p].codes[prot[p].codes >= 0], minlength=len(prot[p].labels))
  others = np.argsort(-counts, kind="stable")[1:]
  w = counts[others].astype(float) ** len(cols)
  g = int(others[rng.choice(len(others), p=w / w.sum())])
  m = meas[int(rng.choice(candidates))]
  in_group = prot[p].codes == g
  cells = []
  for bits in np.ndindex(*([2] * len(cols))):
    filters = {j: values[i][b] for i, (j, b) in enumerate(zip(cols, bits))}
    cohort = np.flatnonzero(_mask(dims, filters, n))
    group = in_group[cohort]
    if not _group_ok(m, cohort, group):
      return None
    sign = 1.0 if sum(bits) % 2 == 0 else -1.0
    n_cell = int((group & m.present[cohort]).sum())
    cells.append((filters, cohort, group, sign, n_cell))
  # Cell c gets sign_c * X / n_c (log) or sign_c * round(X) flips (binary): the group's sum is zero in every marginal.
  per = (lambda c, x: c[3] * x / c[4]) if m.kind != "binary" else (lambda c, x: c[3] * np.round(x) / c[4])
  top = min(_max_size(m) * c[4] for c in cells)

  def weakest(x):
    return min(c[3] * _z_with(m, c[1], c[2], per(c, x)) for c in cells)

  target = rng.uniform(fam.z_band[0] + 0.3, 0.5 * sum(fam.z_band))
  x = _calibrate(weakest, target, top)
  if x is None:
    return None
  zs = [_z_with(m, c[1], c[2], per(c, x)) for c in cells]
  if not all(_in_band(z, fam.z_band) for z in zs):
    return None
  if not all(_meaningful(m, c[1], c[2], per(c, x)) for c in cells):
    return None
  state = m.state.copy()
  truth = []
  for c in cells:
    effect = _commit(m, c[1][c[2]], per(c, x))
    truth.append(
      PlantedEffect(
        {dims[j].name: dims[j].labels[v] for j, v in sorted(c[0].items())},
        prot[p].name,
        prot[p].labels[g],
        m.name,
        effect,
        kind="masked",
      )
    )
  if not _quiet(dims, cols, values, in_group, m, n):
    m.state = state
    return None
  return truth


def _quiet(dims, cols, values, in_group, m, n) -> bool:
  """Every lower-order marginal of the checkerboard (and the root) has |z| < MASKED_QUIET_Z."""
  test = m.values()
  for bits in np.ndindex(*([3] * len(cols))):
    if 2 not in bits:
      continue  # a cell, not a marginal
    filters = {j: values[i][b] for i, (j, b) in enumerate(zip(cols, bits)) if b < 2}
    rows = _mask(dims, filters, n)
    if abs(group_z(test[rows], in_group[rows], binary=m.kind == "binary")) >= MASKED_QUIET_Z:
      return False
  return True


# --- assembly ----------------------------------------------------------------------------------------------------


def _z_at(df: pd.DataFrame, effect: PlantedEffect, kind: str) -> float:
  rows = np.ones(len(df), bool)
  for column, value in effect.cohort.items():
    rows &= (df[column] == value).to_numpy()
  values = df[effect.measure].to_numpy(np.float64)[rows]
  if kind == "lognormal":
    values = np.log(values)
  group = (df[effect.protected] == effect.group).to_numpy()[rows]
  return group_z(values, group, binary=kind == "binary")


def _confounders(df, schema, kinds, adjusters) -> tuple[dict, ...]:
  out = []
  for p in schema.protected:
    for g in sorted(df[p].dropna().unique()):
      group = (df[p] == g).to_numpy()
      for m in schema.measures:
        values = df[m].to_numpy(np.float64)
        values = np.log(values) if kinds[m] == "lognormal" else values
        z = group_z(values, group, binary=kinds[m] == "binary")
        if abs(z) > 5:
          out.append({"protected": p, "group": g, "measure": m, "z": z, "explained_by": list(adjusters)})
  return tuple(out)


def _new_everywhere(df: pd.DataFrame, schema: Schema, truth: Sequence[PlantedEffect], z_screen: float) -> bool:
  """The project's own check: every planted test is significant and new at its cohort, in its direction."""
  cube = build_cube(df, schema)
  # What `cohort_stats` does for one cohort, for all planted cohorts at once (same params, same compiled program).
  params = make_params(cube, bucketed_shape(cube), z_screen=z_screen, max_depth=4)
  codes = np.stack([filters_to_codes(cube.meta, e.cohort) for e in truth])
  table = cohort_table(cube, codes, z_screen=z_screen, max_depth=4, params=params)
  for i, e in enumerate(truth):
    rows = table[(table.cohort_index == i) & (table.protected == e.protected) & (table.measure == e.measure)]
    same = rows[(rows.group == e.group) & (np.sign(rows.z) == e.sign)]
    mirror = rows[(rows.reference == e.group) & (np.sign(rows.z) == -e.sign)]
    hit = pd.concat([same, mirror])
    if hit.empty or not bool((hit.significant & hit.new).all()):
      return False
  return True


def make_world(seed: int, family: str = "standard", *, rows: int | None = None) -> World:
  """Draws a world: a case table, its schema and its planted truth (see the module docstring).

  Args:
    seed: non-negative integer; `split_of(seed)` picks the name vocabulary.
    family: a key of `FAMILIES`.
    rows: number of rows (default the family's; at least 1000).

  Raises:
    ValueError: bad arguments, or no world of the family could be drawn within
      `WORLD_MAX_ATTEMPTS` attempts (too few rows for the band or the depth).
  """
  fam = _family(family)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  n = fam.rows if rows is None else rows
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1000:
    raise ValueError(f"rows must be an integer >= 1000, got {rows!r}")
  split = split_of(int(seed))
  for attempt in range(WORLD_MAX_ATTEMPTS):
    rng = np.random.default_rng([int(seed), zlib.crc32(family.encode()), int(n), attempt])
    world = _attempt(rng, fam, int(seed), int(n), split)
    if world is not None:
      return world
  raise ValueError(
    f"family {family!r}, seed {seed}: no world with every effect in the band {fam.z_band}, new, "
    f"and (masked) quiet marginals within {WORLD_MAX_ATTEMPTS} attempts at rows={n}; use more rows"
  )


def _attempt(rng, fam: Family, seed: int, n: int, split: str) -> World | None:
  names = _Names(rng, split)
  prot = _protected(rng, fam, n, names)
  dims = _dimensions(rng, fam, names)
  meas = _measures(rng, fam, dims, names)
  tilts = _tilts(rng, fam, dims, prot, meas) if fam.confounders else {}
  adjusters = sorted(tilts)
  _draw_dimensions(rng, dims, n, tilts)
  _draw_measures(rng, n, dims, meas)
  _missing(rng, prot)
  truth: list[PlantedEffect] = []
  used: set = set()
  for _ in range(int(rng.integers(fam.plants[0], fam.plants[1] + 1))):
    planted = _plant(rng, fam, dims, prot, meas, used)
    if planted is None:
      return None
    truth.append(planted[0])
  if fam.masked is not None:
    cells = _masked(rng, fam, dims, prot, meas)
    if cells is None:
      return None
    truth += cells
  data = {c.name: _labels(c) for c in dims + prot}
  data.update({m.name: m.natural() for m in meas})
  columns = list(data)
  df = pd.DataFrame({c: data[c] for c in (columns[i] for i in rng.permutation(len(columns)))})
  kinds = {m.name: m.kind for m in meas}
  schema = Schema(
    dimensions=[d.name for d in dims],
    protected=[p.name for p in prot],
    measures=[m.name for m in meas],
    adjusters=[dims[j].name for j in adjusters],
    log_scale={m.name: m.kind == "lognormal" for m in meas if m.kind != "binary"},
  )
  zs = tuple(_z_at(df, e, kinds[e.measure]) for e in truth)
  if not all(_in_band(z, fam.z_band) and np.sign(z) == e.sign for z, e in zip(zs, truth)):
    return None  # a later effect moved an earlier one out of its band
  if truth and not _new_everywhere(df, schema, truth, fam.z_screen):
    return None
  confounders = _confounders(df, schema, kinds, schema.adjusters) if adjusters else ()
  if fam.confounders and not confounders:
    return None  # the tilt left no raw gap worth adjusting for
  parents = {}
  for cols in (dims, prot):
    for c in cols:
      if c.parent is not None:
        parents[c.name] = (c.relation, cols[c.parent].name)
  return World(
    df=df,
    schema=schema,
    truth=truth,
    family=fam.name,
    seed=seed,
    rows=n,
    split=split,
    z=zs,
    confounders=confounders,
    measure_kinds=kinds,
    parents=parents,
    drivers={m.name: tuple(dims[j].name for j in m.drivers) for m in meas},
  )


AGENT_WORLD_INDEX = 1000  # an agent's training worlds: training-split indices from here on (the ranker's start at 20)
# Training-split indices 0-19 validate (the benchmark's `--split train`, an agent's held-out cubes); the learned
# ranker trains on the worlds from here on.
VALIDATION_WORLDS = 20


def make_task_cubes(task: CubeTask, *, split: str) -> CubeSet:
  """The cubes of a `CubeTask`'s split: random worlds of `task.families`, or the synthetic generator's.

  With families, cube `i` is a world of family `families[i % len(families)]`
  with `task.n_rows` rows, and every world is of the worlds' training split:
  "train" cubes from index `AGENT_WORLD_INDEX` on (disjoint from the
  benchmark's validation worlds 0-19 and the learned ranking's rows from 20),
  "eval" cubes (the held-out report after training) the validation worlds
  from index 0, at most `VALIDATION_WORLDS` of a family (a ValueError past
  them). No evaluation-split world is ever drawn: the benchmark's
  evaluation stays unseen. `scenarios` lists the family of each cube. A
  seed whose world cannot be drawn at `n_rows` rows (`make_world`'s
  ValueError) is passed over for the family's next one; `seeds` records the
  seeds used, and more than `WORLD_MAX_ATTEMPTS` seeds in a row failing is an
  error.
  """
  if not task.families:
    return make_synthetic_cubes(task, split=split)
  if split not in SPLITS:
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  for family in task.families:
    _family(family)
  first, count = (AGENT_WORLD_INDEX, task.num_train_cubes) if split == "train" else (0, task.num_eval_cubes)
  out = CubeSet([], [], [], [])
  next_index = dict.fromkeys(task.families, first)
  for i in range(count):
    family = task.families[i % len(task.families)]
    for _ in range(WORLD_MAX_ATTEMPTS):
      # Held-out cubes stop at the validation worlds: past them the learned ranker trained, whose frontier value the
      # agent plays (an audit: 25 asked of a family drew ranker worlds 20-24, silently; world 1001000 was both).
      if split == "eval" and next_index[family] >= VALIDATION_WORLDS:
        raise ValueError(
          f"num_eval_cubes: the held-out worlds of family {family!r} (training-split indices from 0) would reach the "
          f"learned ranker's training worlds (from {VALIDATION_WORLDS}); ask for fewer"
        )
      seed = TRAIN_SEED_BASE + next_index[family]
      next_index[family] += 1
      try:
        world = make_world(seed, family, rows=task.n_rows)
        break
      except ValueError:
        continue
    else:
      raise ValueError(
        f"no {family} world could be drawn at {task.n_rows} rows in {WORLD_MAX_ATTEMPTS} seeds (up to {seed}); "
        "use more rows (--n-rows)"
      )
    out.cubes.append(build_cube(world.df, world.schema))
    out.truths.append(world.truth)
    out.seeds.append(seed)
    out.scenarios.append(family)
  return out
