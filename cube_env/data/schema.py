"""The schema: which columns of a case table play which role."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence


def column_names(value, what: str) -> tuple[str, ...]:
  """`value` (a sequence of column names) as a tuple; ValueError naming `what` for a bare string, which would be read
  letter by letter."""
  if isinstance(value, str):
    raise ValueError(f"{what} must be a list of column names, got the string {value!r}")
  return tuple(value)


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
    object.__setattr__(self, "bins", dict(self.bins))
    object.__setattr__(self, "log_scale", dict(self.log_scale))

  @property
  def filter_columns(self) -> tuple[str, ...]:
    """Columns that can be filtered: dimensions, then protected columns."""
    return tuple(self.dimensions) + tuple(self.protected)
