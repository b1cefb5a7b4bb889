"""Ingest: a case table plus a schema becomes a `Cube` of cells.

Rows are coded (numeric dimensions binned, rare categories folded into
`OTHER`, missing values made an explicit `MISSING` category), then grouped by
every filter column into the base cuboid. Each cell carries, per measure, the
sufficient statistics `(n, sum(x - c), sum((x - c)^2))` of the measure on its
test scale (log for right-skewed positive measures) shifted by the global mean
`c`; a row whose measure is missing is left out of that measure only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import struct

from cube_env.data.disclosure import SMALL_CELL, redact_counts
from cube_env.data.schema import Schema

MISSING = "MISSING"
OTHER = "OTHER"


@dataclasses.dataclass(frozen=True)
class CubeMeta:
  """Static description of a cube (hashable, not traced)."""

  filter_names: tuple[str, ...]  # dimensions, then protected columns
  categories: tuple[tuple[str, ...], ...]  # per filter column, code -> label
  n_dimensions: int  # the first n_dimensions filter columns are dimensions
  measure_names: tuple[str, ...]
  is_binary: tuple[bool, ...]
  is_log: tuple[bool, ...]
  shift: tuple[float, ...]  # global mean of each measure on its test scale
  n_rows: int
  summary: tuple[str, ...]  # what was binned, folded, missing or dropped from a statistic
  # per measure, case-mix adjusted by ratio: the cube holds observed / expected (`cube_env.data.adjust`); () = none
  is_ratio: tuple[bool, ...] = ()

  @property
  def protected_names(self) -> tuple[str, ...]:
    return self.filter_names[self.n_dimensions :]

  def column_index(self, name: str) -> int:
    if name not in self.filter_names:
      raise ValueError(f"unknown filter column {name!r}; the cube has {list(self.filter_names)}")
    return self.filter_names.index(name)

  def code(self, column: str, label: Any) -> int:
    f = self.column_index(column)
    cats = self.categories[f]
    if str(label) not in cats:
      raise ValueError(f"column {column!r} has no category {label!r}; it has {list(cats)}")
    return cats.index(str(label))


@struct.dataclass
class Cube:
  """The base cuboid: one cell per distinct combination of filter codes."""

  codes: jnp.ndarray  # [N, F] int32 category code of every filter column
  rows: jnp.ndarray  # [N] float32 number of rows in the cell
  stats: jnp.ndarray  # [N, M, 3] float32 shifted (n, s1, s2) per measure
  meta: CubeMeta = struct.field(pytree_node=False)

  @property
  def num_cells(self) -> int:
    return int(self.codes.shape[0])

  def summary_text(self) -> str:
    return "\n".join(self.meta.summary)


def filters_to_codes(meta: CubeMeta, filters: Mapping[str, object]) -> np.ndarray:
  """`{column: label}` -> `[F]` int32 codes (-1 = all); unknown names raise ValueError."""
  codes = np.full((len(meta.filter_names),), -1, np.int32)
  for name, label in filters.items():
    codes[meta.column_index(name)] = meta.code(name, label)
  return codes


def codes_to_filters(meta: CubeMeta, codes) -> dict[str, str]:
  """`[F]` codes (-1 = all) -> `{column: label}` of the filtered columns, in column order."""
  return {meta.filter_names[f]: meta.categories[f][int(v)] for f, v in enumerate(codes) if int(v) >= 0}


def cohort_label(filters: Mapping[str, str]) -> str:
  """`{"proc": "A", "site": "s2"}` -> `"proc=A & site=s2"`; `{}` -> `"(all cases)"`."""
  return " & ".join(f"{k}={v}" for k, v in filters.items()) if filters else "(all cases)"


def read_table(path: str | os.PathLike) -> pd.DataFrame:
  """Reads a CSV or Parquet case table (by extension)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"data file {path!r} does not exist")
  lower = path.lower()
  if lower.endswith((".parquet", ".pq")):
    return pd.read_parquet(path)
  if lower.endswith((".csv", ".csv.gz", ".txt")):
    return pd.read_csv(path, low_memory=False)
  raise ValueError(f"data file {path!r}: unknown format (use .csv or .parquet)")


class ColumnError(ValueError):
  """A problem with one column of the table; `column` names it (a service answers with the name)."""

  def __init__(self, column: str, message: str):
    super().__init__(message)
    self.column = column


def validate_table(df: pd.DataFrame, schema: Schema) -> None:
  """Checks `df` against `schema` before any coding: rows, roles, every named column present.

  Raises:
    ColumnError naming the column for a missing one; ValueError for the other problems.
  """
  if not isinstance(df, pd.DataFrame):
    raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
  if len(df) == 0:
    raise ValueError("the table is empty (0 rows)")
  dup_cols = df.columns[df.columns.duplicated()].tolist()
  if dup_cols:
    raise ValueError(f"the table has duplicated column(s) {dup_cols}")
  if not schema.protected:
    raise ValueError("the schema names no protected column (e.g. race, sex, payer)")
  if not schema.measures:
    raise ValueError("the schema names no measure column")
  if not schema.dimensions:
    raise ValueError("the schema names no dimension column")
  roles = {
    "dimensions": schema.dimensions,
    "protected": schema.protected,
    "measures": schema.measures,
    "adjusters": schema.adjusters,
  }
  for role, cols in roles.items():
    seen = set()
    for c in cols:
      if c in seen:
        raise ValueError(f"column {c!r} is listed twice in schema.{role}")
      seen.add(c)
      if c not in df.columns:
        raise ColumnError(c, f"column {c!r} (schema.{role}) is not in the table; columns are {list(df.columns)}")
  owner: dict[str, str] = {}
  for role in ("dimensions", "protected", "measures"):
    for c in roles[role]:
      if c in owner:
        raise ValueError(f"column {c!r} is in two roles: {owner[c]} and {role}")
      owner[c] = role
  for c in schema.adjusters:
    if owner.get(c) == "measures":
      raise ValueError(f"column {c!r} is a measure and cannot be an adjuster")
    if owner.get(c) == "protected":
      raise ValueError(f"column {c!r} is protected and cannot be an adjuster")
  for c in schema.bins:
    if c not in schema.dimensions and c not in schema.protected:
      raise ValueError(f"schema.bins names {c!r}, which is not a dimension or protected column")
  for c in schema.log_scale:
    if c not in schema.measures:
      raise ValueError(f"schema.log_scale names {c!r}, which is not a measure")


def _bin_labels(edges: np.ndarray) -> list[str]:
  def fmt(v):
    return f"{v:.4g}"

  labels = []
  for i in range(len(edges) - 1):
    close = "]" if i == len(edges) - 2 else ")"
    labels.append(f"[{fmt(edges[i])}, {fmt(edges[i + 1])}{close}")
  return labels


def _code_column(
  series: pd.Series, name: str, *, edges: Sequence[float] | None, n_bins: int, max_categories: int, summary: list[str]
) -> tuple[np.ndarray, tuple[str, ...]]:
  """Codes one filter column; returns (codes [rows] int32, labels)."""
  missing = series.isna()
  n_missing = int(missing.sum())
  numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
  nunique = series.nunique(dropna=True)
  if numeric and (edges is not None or nunique > max_categories):
    values = series.astype(float)
    if edges is None:
      qs = np.unique(np.nanquantile(values.to_numpy(), np.linspace(0, 1, n_bins + 1)))
      edges_arr = qs
      how = f"{n_bins} quantile bins"
    else:
      edges_arr = np.asarray(sorted(edges), float)
      lo, hi = np.nanmin(values), np.nanmax(values)
      if lo < edges_arr[0] or hi > edges_arr[-1]:
        raise ValueError(
          f"column {name!r}: values [{lo}, {hi}] fall outside the given bin edges [{edges_arr[0]}, {edges_arr[-1]}]"
        )
      how = "given bin edges"
    if len(edges_arr) < 2:
      edges_arr = np.array([edges_arr[0], edges_arr[0]])
    labels = _bin_labels(edges_arr) if edges_arr[0] < edges_arr[-1] else [f"{edges_arr[0]:.4g}"]
    idx = np.searchsorted(edges_arr, values.to_numpy(), side="right") - 1
    idx = np.clip(idx, 0, len(labels) - 1)
    labelled = pd.Series(np.asarray(labels, dtype=object)[idx], index=series.index)
    labelled[missing] = np.nan
    series = labelled
    summary.append(f"binned {name!r} ({how}): {labels}")
  # Labels are str(value), counted per label (distinct raw values may print alike); the string work is done
  # once per distinct value, not per row (a 1,000,000-row, 40-column table spent most of its ingest there).
  raw_codes, uniques = pd.factorize(series, use_na_sentinel=True)
  unique_labels = [str(v) for v in uniques]
  raw_counts = np.bincount(raw_codes[raw_codes >= 0], minlength=len(unique_labels))
  counts: dict[str, int] = {}
  for lab, c in zip(unique_labels, raw_counts):
    counts[lab] = counts.get(lab, 0) + int(c)
  if MISSING in counts or OTHER in counts:
    raise ValueError(f"column {name!r} already uses the reserved label {MISSING!r} or {OTHER!r}")
  # Most frequent first, ties by label, so codes are stable across runs.
  labels = sorted(counts, key=lambda k: (-counts[k], k))
  if len(labels) > max_categories:
    folded = labels[max_categories - 1 :]
    n_folded_rows = sum(counts[k] for k in folded)
    summary.append(f"folded {len(folded)} rare values of {name!r} ({n_folded_rows} rows) into {OTHER!r}")
    labels = labels[: max_categories - 1] + [OTHER]
  if n_missing:
    labels = labels + [MISSING]
    summary.append(f"{name!r}: {n_missing} missing values coded as {MISSING!r}")
  if len(labels) < 2:
    raise ValueError(f"column {name!r} is constant (only {labels}); it cannot split cohorts or groups")
  lookup = {lab: i for i, lab in enumerate(labels)}
  per_unique = np.asarray([lookup.get(lab, lookup.get(OTHER, -1)) for lab in unique_labels] + [-1], np.int32)
  codes = np.where(raw_codes >= 0, per_unique[raw_codes], lookup.get(MISSING, -1)).astype(np.int32)
  return codes, tuple(labels)


def _measure_values(df: pd.DataFrame, name: str, schema: Schema, summary: list[str]):
  col = df[name]
  if pd.api.types.is_bool_dtype(col):
    col = col.astype(float)
  if not pd.api.types.is_numeric_dtype(col):
    coerced = pd.to_numeric(col, errors="coerce")
    bad = coerced.isna() & col.notna()
    if bad.any():
      example = col[bad].iloc[0]
      rows = redact_counts(f"{int(bad.sum())} rows", SMALL_CELL)  # the small-cell rule holds in errors too
      raise ColumnError(name, f"measure column {name!r} is not numeric (e.g. value {example!r} in {rows})")
    col = coerced
  values = col.to_numpy(dtype=np.float64)
  if np.isinf(values).any():
    raise ValueError(f"measure column {name!r} holds infinite values")
  present = ~np.isnan(values)
  if present.sum() < 2:
    raise ValueError(f"measure column {name!r} has fewer than 2 non-missing values")
  if (~present).any():
    summary.append(f"measure {name!r}: {int((~present).sum())} rows missing, left out of its statistics only")
  observed = values[present]
  uniq = np.unique(observed)
  is_binary = bool(np.all(np.isin(uniq, [0.0, 1.0])))
  if len(uniq) < 2:
    raise ValueError(f"measure column {name!r} is constant ({uniq[0]})")
  forced = schema.log_scale.get(name)
  positive = bool(np.all(observed > 0))
  skew = float(pd.Series(observed).skew())
  if forced is None:
    is_log = (not is_binary) and positive and skew > 1.0
  else:
    is_log = bool(forced)
    if is_log and (is_binary or not positive):
      raise ValueError(f"measure {name!r}: log scale requested but it has values <= 0 or is binary")
  if is_log:
    values = np.log(values)
    summary.append(
      f"measure {name!r}: tested on the log scale (skewness {skew:.2f}); effects are ratios of geometric means"
    )
  elif forced is None and not is_binary and not positive and skew > 1.0:
    nonpositive = redact_counts(f"{int((observed <= 0).sum())} rows", SMALL_CELL)
    summary.append(
      f"measure {name!r}: right-skewed (skewness {skew:.2f}) but {nonpositive} hold values <= 0, so it is tested "
      "on the linear scale (differences of means), not the log scale"
    )
  return values, is_binary, is_log


def encode_table(df: pd.DataFrame, schema: Schema, *, max_categories: int = 12, n_bins: int = 4):
  """Codes a table for the cube.

  Returns:
    (codes [rows, F] int32, values [rows, M] float64 on the test scale with NaN
    for missing, CubeMeta without shift). Exposed so that reports and
    confirmation can code other rows (e.g. a holdout half) identically.
  """
  validate_table(df, schema)
  if max_categories < 2:
    raise ValueError(f"max_categories must be >= 2, got {max_categories}")
  summary: list[str] = []
  filter_names = schema.filter_columns
  codes = np.zeros((len(df), len(filter_names)), np.int32)
  categories = []
  for f, name in enumerate(filter_names):
    c, labels = _code_column(
      df[name], name, edges=schema.bins.get(name), n_bins=n_bins, max_categories=max_categories, summary=summary
    )
    codes[:, f] = c
    categories.append(labels)
  values = np.zeros((len(df), len(schema.measures)), np.float64)
  is_binary, is_log = [], []
  for m, name in enumerate(schema.measures):
    v, b, lg = _measure_values(df, name, schema, summary)
    values[:, m] = v
    is_binary.append(b)
    is_log.append(lg)
  meta = CubeMeta(
    filter_names=tuple(filter_names),
    categories=tuple(categories),
    n_dimensions=len(schema.dimensions),
    measure_names=tuple(schema.measures),
    is_binary=tuple(is_binary),
    is_log=tuple(is_log),
    shift=(),
    n_rows=len(df),
    summary=tuple(summary),
  )
  return codes, values, meta


def cells_from_codes(codes: np.ndarray, values: np.ndarray, shift: np.ndarray):
  """Groups coded rows into cells with shifted sufficient statistics (float64).

  Returns:
    (cell_codes [N, F] int32, rows [N], stats [N, M, 3]).
  """
  present = ~np.isnan(values)
  centered = np.where(present, values - shift[None, :], 0.0)
  data = np.concatenate([np.ones((len(codes), 1)), present.astype(float), centered, centered**2], axis=1)
  frame = pd.DataFrame(data)
  keys = [pd.Series(codes[:, f]) for f in range(codes.shape[1])]
  grouped = frame.groupby(keys, sort=True).sum()
  cell_codes = np.asarray(grouped.index.to_frame(index=False).to_numpy(), np.int32)
  if cell_codes.ndim == 1:
    cell_codes = cell_codes[:, None]
  g = grouped.to_numpy()
  m = values.shape[1]
  rows = g[:, 0]
  stats = np.stack([g[:, 1 : 1 + m], g[:, 1 + m : 1 + 2 * m], g[:, 1 + 2 * m : 1 + 3 * m]], axis=-1)
  return cell_codes, rows, stats


def build_cube(df: pd.DataFrame, schema: Schema, *, max_categories: int = 12, n_bins: int = 4) -> Cube:
  """Builds the base cuboid of a case table.

  Args:
    df: one row per case.
    schema: the roles of the columns.
    max_categories: a filter column with more distinct values keeps the
      `max_categories - 1` most frequent and folds the rest into `OTHER`
      (`MISSING` comes on top).
    n_bins: quantile bins for numeric columns with more than `max_categories`
      values and no edges in `schema.bins`.

  Raises:
    ValueError naming the column for bad input (see `Schema`).
  """
  codes, values, meta = encode_table(df, schema, max_categories=max_categories, n_bins=n_bins)
  shift = np.nanmean(values, axis=0)
  cell_codes, rows, stats = cells_from_codes(codes, values, shift)
  meta = dataclasses.replace(meta, shift=tuple(float(s) for s in shift))
  return Cube(
    codes=jnp.asarray(cell_codes, jnp.int32),
    rows=jnp.asarray(rows, jnp.float32),
    stats=jnp.asarray(stats, jnp.float32),
    meta=meta,
  )
