"""Environment parameters: a cube's arrays padded to a fixed shape.

The cube travels in `EnvParams` (a pytree of arrays), so one jitted function
serves every cube padded to the same `EnvShape`, and a batch of different cubes
can be stacked and vmapped (docs/design.md, The game).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from cube_env.data.disclosure import SMALL_CELL
from cube_env.data.ingest import Cube
from cube_env.environment import cells as cl


@dataclasses.dataclass(frozen=True)
class EnvShape:
  """Static padded sizes (hashable; part of the jitted function's identity)."""

  num_cells: int  # N: base-cuboid cells
  num_filters: int  # F (D_max in docs/design.md): filterable columns, dimensions then protected
  num_values: int  # C (C_max): categories per filter column; action column C means "all"
  num_protected: int  # P
  num_groups: int  # G: categories per protected column
  num_measures: int  # M

  @staticmethod
  def of(cube: Cube) -> EnvShape:
    meta = cube.meta
    prot_cats = [len(c) for c in meta.categories[meta.n_dimensions :]]
    return EnvShape(
      num_cells=cube.num_cells,
      num_filters=len(meta.filter_names),
      num_values=max(len(c) for c in meta.categories),
      num_protected=len(prot_cats),
      num_groups=max(prot_cats),
      num_measures=len(meta.measure_names),
    )

  def union(self, other: EnvShape) -> EnvShape:
    return EnvShape(*[max(a, b) for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))])


@struct.dataclass
class EnvParams:
  """One cube, padded. Padding cells have zero rows; padding columns zero categories."""

  codes: chex.Array  # [N, F] int32
  rows: chex.Array  # [N] float32 rows per cell
  stats: chex.Array  # [N, M, 3] float32 shifted sufficient statistics
  shift: chex.Array  # [M] float32 global mean per measure (test scale)
  n_cats: chex.Array  # [F] int32 real categories per filter column (0 = padding)
  prot_col: chex.Array  # [P] int32 filter column of each protected column
  prot_valid: chex.Array  # [P] bool
  tested: chex.Array  # [P, G] bool: group g of p is compared with the rest
  is_binary: chex.Array  # [M] bool
  measure_valid: chex.Array  # [M] bool
  total_rows: chex.Array  # [] float32
  min_group: chex.Array  # [] float32
  min_cohort: chex.Array  # [] float32
  z_screen: chex.Array  # [] float32 |z| of a significant gap
  new_z: chex.Array  # [] float32 heterogeneity z that makes a gap new despite a parent's same gap (`findings.novelty`)
  max_depth: chex.Array  # [] int32
  order: chex.Array  # [F, N] int32 cells sorted by code per column (`cells.build_index`)
  starts: chex.Array  # [F, C + 1] int32 where each code's cells start in `order`
  root: chex.Array  # [F, C, P, G, M * 3 + 1] float32 root group-by: payload by column code and group


def bonferroni_z(cube: Cube, max_depth: int, alpha: float = 0.05) -> float:
  """Screening |z| from Bonferroni over every hypothesis in the search space.

  Hypotheses = cohorts up to `max_depth` (products of the columns' category
  counts, summed over column subsets: elementary symmetric polynomials) times
  the tests per cohort (tested groups x measures).
  """
  n_cohorts = float(sum(subset_products([len(c) for c in cube.meta.categories], max_depth)))
  groups = 0
  for c in cube.meta.categories[cube.meta.n_dimensions :]:
    groups += 1 if len(c) == 2 else len(c)
  n_tests = n_cohorts * groups * len(cube.meta.measure_names)
  return float(-statistics.NormalDist().inv_cdf(alpha / (2.0 * n_tests)))


def subset_products(counts, depth: int) -> list[int]:
  """`[e_0, ..., e_depth]`: for each k, the sum over k-column subsets of the product of their category counts
  (elementary symmetric polynomials): the cohorts with k filters if every combination of values occurred."""
  e = [1] + [0] * depth
  for c in counts:
    for k in range(depth, 0, -1):
      e[k] += e[k - 1] * int(c)
  return e


def resolve_z(cube: Cube, z_screen: float | str, max_depth: int) -> float:
  """The screening |z|: a positive number as given, or "bonferroni" (`bonferroni_z`)."""
  if isinstance(z_screen, str):
    if z_screen != "bonferroni":
      raise ValueError(f"z_screen must be a number or 'bonferroni', got {z_screen!r}")
    return bonferroni_z(cube, max_depth)
  if not np.isfinite(z_screen) or z_screen <= 0:
    raise ValueError(f"z_screen must be a positive number, got {z_screen!r}")
  return float(z_screen)


# The padded shape of a small table: a table that fits it in every size but the values (cells, filter columns,
# protected columns, groups, measures) is padded to it, so small tables of different schemas share compiled
# programs (a service worker's or a notebook's next table, the test suite's many small tables), where compiling,
# not querying, is the time. The values stay the table's own: the `learned` ranker reads a column's share of the
# grid's width (hence num_values 0 here). A table larger in any of those sizes keeps its own: padding would multiply its work per query, where
# compiling is a small part. On the smallest tables padding costs a little per query (docs/design.md, Discovery).
SMALL_TABLE_SHAPE = EnvShape(num_cells=4096, num_filters=8, num_values=0, num_protected=2, num_groups=4, num_measures=4)


def bucketed_shape(cube: Cube, *, small_floor: bool = True) -> EnvShape:
  """The cube's own shape with cells rounded up to a power of two, so cubes of one schema share compiled code;
  a table that fits `SMALL_TABLE_SHAPE` is padded to it (`small_floor`), its values kept, so small tables of
  different schemas share it. Padding changes no finding: padded cells have no rows, padded columns no
  categories, padded groups and measures are not tested (tests/test_methods.py compares runs; the muzero agent
  plays on the table's own sizes, `experiments.agent.play`)."""
  shape = EnvShape.of(cube)
  shape = dataclasses.replace(shape, num_cells=1 << max(shape.num_cells - 1, 1).bit_length())
  floor = dataclasses.replace(SMALL_TABLE_SHAPE, num_values=shape.num_values)
  if small_floor and all(a <= b for a, b in zip(dataclasses.astuple(shape), dataclasses.astuple(floor))):
    shape = floor
  return shape


def make_params(
  cube: Cube,
  shape: EnvShape | None = None,
  *,
  max_depth: int = 3,
  min_group: float = SMALL_CELL,
  min_cohort: float | None = None,
  z_screen: float | str = 4.0,
  new_z: float | None = None,
) -> EnvParams:
  """Pads a cube's arrays to `shape` (default: its own) and adds the thresholds.

  `new_z` is the heterogeneity z a significant gap needs over the rest of a
  parent that shows the same gap to count as new (`findings.novelty`);
  default: the screen `z_screen` (docs/design.md, Newness).
  """
  own = EnvShape.of(cube)
  shape = shape or own
  if any(a > b for a, b in zip(dataclasses.astuple(own), dataclasses.astuple(shape))):
    raise ValueError(f"cube of shape {own} does not fit the padded shape {shape}")
  if max_depth < 1:
    raise ValueError(f"max_depth must be >= 1, got {max_depth}")
  if min_group < 2:
    raise ValueError(f"min_group must be >= 2, got {min_group}")
  z_screen = resolve_z(cube, z_screen, max_depth)
  new_z = z_screen if new_z is None else float(new_z)
  if not np.isfinite(new_z) or new_z <= 0:
    raise ValueError(f"new_z must be a positive number or None, got {new_z!r}")
  if min_cohort is None:
    min_cohort = 2 * min_group
  meta = cube.meta
  n, f = own.num_cells, own.num_filters
  codes = np.zeros((shape.num_cells, shape.num_filters), np.int32)
  codes[:n, :f] = np.asarray(cube.codes)
  rows = np.zeros((shape.num_cells,), np.float32)
  rows[:n] = np.asarray(cube.rows)
  stats = np.zeros((shape.num_cells, shape.num_measures, 3), np.float32)
  stats[:n, : own.num_measures] = np.asarray(cube.stats)
  shift = np.zeros((shape.num_measures,), np.float32)
  shift[: own.num_measures] = meta.shift
  n_cats = np.zeros((shape.num_filters,), np.int32)
  n_cats[:f] = [len(c) for c in meta.categories]
  prot_col = np.zeros((shape.num_protected,), np.int32)
  prot_valid = np.zeros((shape.num_protected,), bool)
  tested = np.zeros((shape.num_protected, shape.num_groups), bool)
  for p in range(own.num_protected):
    prot_col[p] = meta.n_dimensions + p
    prot_valid[p] = True
    n_groups = len(meta.categories[meta.n_dimensions + p])
    if n_groups == 2:
      tested[p, 1] = True  # codes are by frequency: test the smaller group once
    else:
      tested[p, :n_groups] = True
  is_binary = np.zeros((shape.num_measures,), bool)
  is_binary[: own.num_measures] = meta.is_binary
  measure_valid = np.zeros((shape.num_measures,), bool)
  measure_valid[: own.num_measures] = True
  order, starts = cl.build_index(codes, n, shape.num_values)
  codes, rows, stats = jnp.asarray(codes), jnp.asarray(rows), jnp.asarray(stats)
  prot_col, order, starts = jnp.asarray(prot_col), jnp.asarray(order), jnp.asarray(starts)
  root = cl.root_sums(
    codes, stats, rows, prot_col, order, starts, num_values=shape.num_values, num_groups=shape.num_groups
  )
  return EnvParams(
    codes=codes,
    rows=rows,
    stats=stats,
    shift=jnp.asarray(shift),
    n_cats=jnp.asarray(n_cats),
    prot_col=prot_col,
    prot_valid=jnp.asarray(prot_valid),
    tested=jnp.asarray(tested),
    is_binary=jnp.asarray(is_binary),
    measure_valid=jnp.asarray(measure_valid),
    total_rows=jnp.float32(meta.n_rows),
    min_group=jnp.float32(min_group),
    min_cohort=jnp.float32(min_cohort),
    z_screen=jnp.float32(z_screen),
    new_z=jnp.float32(new_z),
    max_depth=jnp.int32(max_depth),
    order=order,
    starts=starts,
    root=root,
  )


def stack_params(params: Sequence[EnvParams]) -> EnvParams:
  """Stacks already padded params of equal shape along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *params)
