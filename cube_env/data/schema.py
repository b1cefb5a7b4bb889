"""The schema: which columns of a case table play which role."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np


def column_names(value, what: str) -> tuple[str, ...]:
  """`value` (a sequence of column names) as a tuple; ValueError naming `what` for a bare string, which would be read
  letter by letter."""
  if isinstance(value, str):
    raise ValueError(f"{what} must be a list of column names, got the string {value!r}")
  return tuple(value)


def bin_edges(edges, name: str) -> tuple[float, ...]:
  """A column's bin edges as sorted floats: at least two distinct numbers, none NaN (open outer edges, -inf and
  inf, as `pd.cut` users write them, are taken); ValueError naming `Schema.bins[name]` otherwise (an ingest audit:
  the string "0,50,100" was read letter by letter, a NaN edge made the column "constant", a single edge gave a
  misleading error)."""
  what = f"Schema.bins[{name!r}]"
  if isinstance(edges, str | bytes) or not (isinstance(edges, Sequence) or hasattr(edges, "__array__")):
    raise ValueError(f"{what} must be a list of numbers (bin edges), got {edges!r}")
  items = list(edges)
  try:
    if any(isinstance(e, str | bytes | bool) for e in items):  # float("50") would take a text edge
      raise TypeError
    numbers = tuple(float(e) for e in items)
  except (TypeError, ValueError):
    raise ValueError(f"{what} must hold numbers only, got {items!r}") from None
  if len(numbers) < 2 or any(math.isnan(e) for e in numbers):
    raise ValueError(f"{what} must hold at least two numbers, none NaN, got {items!r}")
  numbers = tuple(sorted(numbers))
  if any(b == a for a, b in zip(numbers, numbers[1:])):
    raise ValueError(f"{what} must not repeat an edge, got {items!r}")
  return numbers


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schema:
  """Roles of the columns of a case table (one row per case or encounter).

  Attributes:
    dimensions: categorical (or numeric, then binned) columns that define cohorts,
      e.g. procedure, site, urgency.
    protected: protected attributes whose groups are compared, e.g. race, sex,
      payer. They may also be filtered (intersectional cohorts).
    measures: numeric outcome columns. A column holding only 0/1 is binary.
    adjusters: columns used for case-mix adjustment (they may also be dimensions); a run adjusts by them
      as by `adjust=` (`pipeline.prepare`; naming other adjusters there is an error).
    bins: per numeric dimension, explicit bin edges; numeric dimensions without
      an entry are cut at quantiles (see `build_cube(n_bins=...)`).
    log_scale: per measure, force (True) or forbid (False) the log scale; by
      default a measure whose values are all > 0 with sample skewness > 1 is
      tested on the log scale.
  """

  dimensions: Sequence[str]
  protected: Sequence[str]
  measures: Sequence[str]
  adjusters: Sequence[str] = ()
  bins: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
  log_scale: Mapping[str, bool] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name in ("dimensions", "protected", "measures", "adjusters"):
      object.__setattr__(self, name, column_names(getattr(self, name), f"Schema.{name}"))
    object.__setattr__(self, "bins", {name: bin_edges(edges, name) for name, edges in dict(self.bins).items()})
    object.__setattr__(self, "log_scale", dict(self.log_scale))
    for name, forced in self.log_scale.items():  # an ingest audit: the string "false" forced the log scale
      if not isinstance(forced, bool | np.bool_):
        raise ValueError(f"Schema.log_scale[{name!r}] must be True or False, got {forced!r}")

  @property
  def filter_columns(self) -> tuple[str, ...]:
    """Columns that can be filtered: dimensions, then protected columns."""
    return tuple(self.dimensions) + tuple(self.protected)
