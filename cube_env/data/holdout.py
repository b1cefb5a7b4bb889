"""Exploration and confirmation halves of a case table, coded identically.

Rows are split by a seeded hash of their content (`split_rows`), so re-runs
with the same seed agree whatever the row order. Both halves are coded with
one `encode_table` pass over the whole table (same categories, bins and log
scales), then grouped into two cubes. Searches see only the exploration cube;
candidates are re-tested on the confirmation cube (docs/design.md, Discovery and confirmation
report). With adjusters, both cubes hold observed minus expected values
(observed / expected for non-negative measures on their natural scale), the
expectation estimated on the exploration half (`cube_env.data.adjust`); the raw
confirmation cube is kept for the relative-difference rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env.data import adjust as adj
from cube_env.data.disclosure import SMALL_CELL, redact_counts
from cube_env.data.ingest import (
  ColumnError,
  Cube,
  CubeMeta,
  cells_from_codes,
  check_scalars,
  encode_table,
  measure_shift,
)
from cube_env.data.schema import Schema


def split_rows(df: pd.DataFrame, *, seed: int, fraction: float = 0.5) -> np.ndarray:
  """`[rows]` bool, True = exploration: a seeded hash of each row's values.

  The hash is `pandas.util.hash_pandas_object` (SipHash keyed by the seed) of
  the row's values, index ignored; a row goes to exploration when its hash,
  read as a number in [0, 1), is below `fraction`. Every column of `df`
  counts, in its order: the same table and seed give the same split on any
  machine, while reordering the columns or adding one draws another split
  (README, Discovery on your table, The split).

  Rows with the same values are split independently: the k-th copy (k >= 1)
  hashes its row's hash together with k, the first copy keeps its own. A
  table of categories and a 0/1 outcome with no identifier repeats each
  pattern many times, and one hash per pattern would send every copy to the
  same half, so the halves would not be independent samples and the
  confirmation no held-out test. Identical rows are interchangeable, so the
  split still does not depend on the row order, and a table without repeated
  rows splits as it did before copies were counted.

  pandas applies the key to the text cells and text categories only, not to
  their missing cells, so a row of numbers alone (a table of integer codes and
  0/1 outcomes, or a row whose every text cell is missing) hashed the same
  under every seed: into such a row's hash a seed other than 0 is mixed
  (SplitMix64's finalizer), and seed 0 keeps the split the content alone gives
  (a cold audit found the rows whose text cells were all missing in the same
  half under every seed; the other rows' splits did not change).
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"the exploration fraction must lie in (0, 1), got {fraction}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 16**16:
    raise ValueError(f"seed must be a non-negative integer below 16**16, got {seed!r}")
  key = f"{int(seed):016x}"
  try:
    hashed = pd.util.hash_pandas_object(df, index=False, hash_key=key).to_numpy(np.uint64)
  except TypeError:  # unhashable cells (lists, mappings) in some column, used by the schema or not: name it
    for c in df.columns:
      try:
        check_scalars(df[c], c)
      except ColumnError as error:  # an ingest audit: a column no flag named refused the table, with no word why
        raise ColumnError(
          c,
          f"{error}; every column of the table counts in the row split (its hash), used by the run or not: drop "
          "the column from the table or give it one value a cell",
        ) from None
    raise
  copy = pd.Series(hashed).groupby(hashed, sort=False).cumcount().to_numpy(np.uint64)  # 0 for a row's first copy
  again = copy > 0
  if again.any():
    pairs = pd.DataFrame({"row": hashed[again], "copy": copy[again]})
    hashed = hashed.copy()
    hashed[again] = pd.util.hash_pandas_object(pairs, index=False, hash_key=key).to_numpy(np.uint64)
  if seed:  # pandas keys only text and categories, and not their missing cells (see below)
    unkeyed = np.ones(len(df), bool)
    for c in df.columns:
      if _keyed(df[c]):
        unkeyed &= df[c].isna().to_numpy()
    hashed = np.where(unkeyed, _mix(hashed ^ _mix(np.full(1, seed, np.uint64))), hashed)
  unit = (hashed >> np.uint64(11)).astype(np.float64) / float(2**53)
  return unit < fraction


class HalvesError(ValueError):
  """A split whose halves are too small (`check_halves`); `setting` names the one that can help ("explore_fraction",
  "min_group"), or is None where only more rows can."""

  def __init__(self, message: str, setting: str | None):
    super().__init__(message)
    self.setting = setting


def check_halves(explore: np.ndarray, *, fraction: float, min_rows: int = 1) -> None:
  """`HalvesError` (a ValueError) naming `explore_fraction` when a half of the split (`split_rows`' mask) holds fewer than `min_rows`
  rows. A discovery run asks for two sides of `min_group` rows in each half (`pipeline.prepare`): with fewer, no
  test could run there, so a fraction near 0 or 1 is refused before any search (it ran, and a report showed "4
  confirmation" rows). The message gives the short halves' rows only, counts from 1 to 10 as "fewer than 11 rows"
  (`redact_counts`), and not the table's (less a half shown, it gave the other back: a review). The advice is the
  setting that can help: the fraction toward 0.5 where half the table would do, else a smaller min_group where it
  is above the small-cell rule's, else a larger table."""
  halves = (("exploration", int(explore.sum())), ("confirmation", int((~explore).sum())))
  short = [f"the {name} half holds {redact_counts(f'{n} rows', SMALL_CELL)}" for name, n in halves if n < min_rows]
  if not short:
    return
  need = f"at least {min_rows} row{'s' * (min_rows != 1)}" + (
    f", a group and a rest of min_group = {min_rows / 2:g} each" * (min_rows > 1)
  )
  if fraction != 0.5 and explore.size // 2 >= min_rows:
    setting, advice = "explore_fraction", "explore_fraction must move toward 0.5 (or use more rows)"
  elif min_rows / 2 > SMALL_CELL:
    setting, advice = "min_group", "min_group must be lower (or use more rows)"
  else:
    setting, advice = None, "the table is too small to split: use more rows"
  raise HalvesError(
    f"{' and '.join(short)} at explore_fraction = {fraction:g}; each half needs {need}: {advice}", setting
  )


def _keyed(column: pd.Series) -> bool:
  """Whether `hash_pandas_object`'s key reaches the column's hash: text and objects, and categories whose categories
  are (pandas hashes a categorical by its categories: integer ones ignore the key, an audit's seeds 0-2 split alike)."""
  dtype = column.dtype
  if isinstance(dtype, pd.CategoricalDtype):
    return _keyed(pd.Series(dtype.categories))
  return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finalizer on uint64s (a bijection whose every output bit depends on every input bit)."""
  with np.errstate(over="ignore"):
    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclasses.dataclass(frozen=True)
class Halves:
  """The two cubes of a split table (same coding)."""

  explore: Cube  # rows the search sees
  confirm: Cube  # rows that re-test the candidates
  confirm_raw: Cube  # confirmation rows without case-mix adjustment (== confirm when unadjusted)
  explore_rows: int
  confirm_rows: int
  adjusters: tuple[str, ...]
  summary: tuple[str, ...]  # coding, split and adjustment notes
  explore_raw: Cube | None = None  # exploration rows without case-mix adjustment (== explore when unadjusted)
  # Adjusted: the variance the confirmation rows' expected values owe to their estimates (confirmation adds it).
  expectation: adj.ExpectationError | None = None


def _cube(codes, values, meta: CubeMeta, rows: np.ndarray, *, adjusted: bool, summary, is_ratio=()) -> Cube:
  v = values[rows]
  shift = measure_shift(v)
  cell_codes, n, stats = cells_from_codes(codes[rows], v, shift)
  is_binary = tuple(False for _ in meta.is_binary) if adjusted else meta.is_binary
  # Adjusted values are differences from the expected (or ratios): no longer the measure's counts or values, so
  # neither the small-cell rule's events of a count nor its cases of each value apply to them (the confirmation's
  # unadjusted cube keeps both: `RAW_SMALL_EVENTS`).
  meta = dataclasses.replace(
    meta,
    shift=tuple(float(s) for s in shift),
    n_rows=int(rows.sum()),
    is_binary=is_binary,
    is_count=() if adjusted else meta.is_count,
    few_values=() if adjusted else meta.few_values,
    summary=tuple(summary),
    is_ratio=tuple(is_ratio),
  )
  return Cube(
    codes=jnp.asarray(cell_codes, jnp.int32),
    rows=jnp.asarray(n, jnp.float32),
    stats=jnp.asarray(stats, jnp.float32),
    meta=meta,
  )


def split_cubes(
  df: pd.DataFrame,
  schema: Schema,
  *,
  seed: int,
  fraction: float = 0.5,
  adjusters: Sequence[str] = (),
  max_categories: int = 12,
  n_bins: int = 4,
  min_rows: int = 1,
) -> Halves:
  """Codes the table once and builds the exploration and confirmation cubes.

  Args:
    df, schema: the case table and its roles (see `build_cube`).
    seed: seeds the row hash.
    fraction: share of rows in the exploration half.
    adjusters: columns for case-mix adjustment (default: none).
    max_categories, n_bins: as in `build_cube`.
    min_rows: fewest rows a half may hold (`check_halves`; `pipeline.prepare` asks for 2 * min_group).
  """
  codes, values, meta = encode_table(df, schema, max_categories=max_categories, n_bins=n_bins)
  explore = split_rows(df, seed=seed, fraction=fraction)
  check_halves(explore, fraction=fraction, min_rows=max(1, min_rows))
  summary = list(meta.summary) + [
    f"rows split by a hash seeded with {seed}: {int(explore.sum())} exploration, {int((~explore).sum())} confirmation"
  ]
  adjusters = tuple(adjusters)
  raw_values = values
  is_ratio = ()
  expectation = None
  if adjusters:
    asked = adj.ratio_measures(values, meta.is_binary, meta.is_log)
    levels = adj.adjuster_levels(df, adjusters)
    values, line, is_ratio = adj.residualize(
      df, adjusters, values, explore, ratio=asked, names=meta.measure_names, levels=levels
    )
    summary.append(line)
    expectation = adj.expectation_error(levels, raw_values, explore, is_ratio, codes)
  kw = dict(adjusted=bool(adjusters), summary=summary, is_ratio=is_ratio)
  explore_cube = _cube(codes, values, meta, explore, **kw)
  confirm_cube = _cube(codes, values, meta, ~explore, **kw)
  raw = _cube(codes, raw_values, meta, ~explore, adjusted=False, summary=summary) if adjusters else confirm_cube
  explore_raw = _cube(codes, raw_values, meta, explore, adjusted=False, summary=summary) if adjusters else explore_cube
  return Halves(
    explore=explore_cube,
    confirm=confirm_cube,
    confirm_raw=raw,
    explore_rows=int(explore.sum()),
    confirm_rows=int((~explore).sum()),
    adjusters=adjusters,
    summary=tuple(summary),
    explore_raw=explore_raw,
    expectation=expectation,
  )
