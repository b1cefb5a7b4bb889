"""Group-versus-rest statistics on sufficient statistics, in float32 JAX.

Every function here is elementwise over leading axes (so it is batched by
broadcasting) and never returns NaN or infinity, whatever the counts:
zero variance, empty groups and single rows give finite numbers and
`valid=False`.

Sufficient statistics are triples `(n, s1, s2)` of values shifted by the
measure's centre `c` (its mean, or its median where extreme values pull the
mean away; `ingest.measure_shift`): `s1 = sum(x - c)`, `s2 = sum((x - c)^2)`.
Shifting keeps float32 sums of squares precise (docs/design.md, The cube).

References:
  Welch, B. L. (1947). The generalization of "Student's" problem when several
    different population variances are involved. Biometrika 34, 28-35.
  Newcombe, R. G. (1998). Interval estimation for the difference between
    independent proportions. Statistics in Medicine 17, 873-890 (Wald form).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as sps

Z_MAX = 40.0  # |z| cap: p below ~1e-300
_Z975 = 1.959963984540054
_TINY = 1e-30
# A binary test's normal approximation needs this many expected events and non-events on each side, so a cohort
# with fewer than twice as many events (or non-events) has no binary test (`_binary_test`).
MIN_EXPECTED = 5
EXACT_CHUNK = 128  # smallest chunk of t statistics sent to the incomplete beta together


@chex.dataclass(frozen=True)
class Comparison:
  """Group versus rest of a cohort for one measure (all fields share one shape S).

  For log-scale measures means are geometric (exp of the log mean) and `diff` is
  the log ratio of geometric means; for binary measures means are rates and
  `diff` is the risk difference.
  """

  n_group: chex.Array  # [*S] rows of the group with the measure present
  n_rest: chex.Array  # [*S]
  mean_group: chex.Array  # [*S] on the test scale (log for log measures)
  mean_rest: chex.Array  # [*S]
  var_group: chex.Array  # [*S] sample variance (Bessel), test scale
  var_rest: chex.Array  # [*S]
  diff: chex.Array  # [*S] mean_group - mean_rest (test scale)
  se: chex.Array  # [*S] standard error of diff (Welch / unpooled Wald)
  ci_low: chex.Array  # [*S] 95% interval of diff
  ci_high: chex.Array  # [*S]
  smd: chex.Array  # [*S] standardized mean difference (average-variance d); binary: Cohen's h
  ratio: chex.Array  # [*S] ratio of means (risk ratio / ratio of geometric means)
  df: chex.Array  # [*S] Welch-Satterthwaite degrees of freedom (inf-free; binary: 1e6)
  z: chex.Array  # [*S] signed normal equivalent of the two-sided p-value
  p_value: chex.Array  # [*S] two-sided p-value
  valid: chex.Array  # [*S] bool: the test is allowed (min_group, binary expected counts)


def moments(suff: chex.Array, shift: chex.Array):
  """Count, mean and sample variance from shifted sufficient statistics.

  Args:
    suff: `[..., 3]` of (n, sum(x - shift), sum((x - shift)^2)).
    shift: broadcastable to `suff[..., 0]`.

  Returns:
    (n, mean, var), each of shape `suff.shape[:-1]`; var is 0 when n < 2.
  """
  n = suff[..., 0]
  s1 = suff[..., 1]
  s2 = suff[..., 2]
  safe_n = jnp.maximum(n, 1.0)
  centered_mean = s1 / safe_n
  ss = s2 - s1 * centered_mean
  # Below float32 resolution of the cancellation (a side whose mean lies some 500 of its standard deviations or
  # more from the shift, or whose values are all equal) the spread is unknown between 0 and that resolution: take
  # the resolution, which can only understate a gap's evidence. Taken as 0 it made both sides of a cohort far from
  # the measure's mean (costs near $100 among costs near $40,000) read as constant, so their gap as unbounded
  # (|z| = Z_MAX, a false finding). Sides that are truly constant get a spread of 0.2% of their distance from the
  # shift, which leaves two constant sides' gap strong (|z| 15.6 at 11 rows a side, 4.75 at 2: few degrees of
  # freedom) unless they sit far from the shift and close together.
  floor = 4e-6 * s2
  ss = jnp.where(ss > floor, ss, floor)
  var = jnp.where(n >= 2, ss / jnp.maximum(n - 1.0, 1.0), 0.0)
  mean = jnp.where(n > 0, shift + centered_mean, shift)
  return n, mean, var


def centered_mean(suff: chex.Array) -> chex.Array:
  """The mean less the shift, `s1 / n` (0 when n = 0). Two sides' gap is taken between these: `moments`' means
  (shift + s1 / n) sit on float32's grid at the shift's size, so the gap of a measure whose spread is a millionth
  of its mean (a date stored as YYYYMMDD) came out in steps of that grid (an audit: 0.3125 for 0.328 at 1e6, 0 for
  -0.546 at 1e7)."""
  return suff[..., 1] / jnp.maximum(suff[..., 0], 1.0)


def t_two_sided_p(t: chex.Array, df: chex.Array) -> chex.Array:
  """Two-sided p-value of Student's t: I_{df/(df+t^2)}(df/2, 1/2)."""
  t = jnp.abs(t)
  x = df / (df + t * t)
  return jax.scipy.special.betainc(df / 2.0, 0.5, jnp.clip(x, 0.0, 1.0))


def _wallace_z(abs_t, df):
  """Wallace (1959): z = sqrt(df log1p(t^2/df)) (8 df + 1) / (8 df + 3).

  Relative error against scipy's exact z: for df >= 200 < 3e-4 to t = 50 and < 1e-3 beyond; for df >= 10
  < 0.7% to t = 20, < 0.95% to t = 50 and < 1.5% to t = 1000; for df >= 100 < 0.15%
  (`test_wallace_and_underflow_z_are_within_their_measured_bounds`; 0.6% was stated before a statistics audit).
  """
  return jnp.sqrt(df * jnp.log1p(abs_t * abs_t / df)) * (8 * df + 1) / (8 * df + 3)


def _sparse_t_p(abs_t: chex.Array, df: chex.Array, need: chex.Array) -> chex.Array:
  """`t_two_sided_p` where `need`, 1 elsewhere; only the needed elements run the incomplete beta.

  The continued fraction iterates until every element of its array has
  converged, so it runs on the needed elements gathered into chunks (a
  loop over at most 8 chunks; none when nothing is needed), not on the whole
  array with trivial inputs.
  """
  shape = abs_t.shape
  flat_t, flat_df, flat_need = abs_t.reshape(-1), df.reshape(-1), need.reshape(-1)
  size = flat_t.shape[0]
  if size == 0:
    return jnp.ones(shape, jnp.float32)
  chunk = max(EXACT_CHUNK, -(-size // 8))
  (where,) = jnp.nonzero(flat_need, size=-(-size // chunk) * chunk, fill_value=size)

  def body(i, p):
    sel = jax.lax.dynamic_slice(where, (i * chunk,), (chunk,))
    ok = sel < size
    at = jnp.minimum(sel, size - 1)
    got = t_two_sided_p(jnp.where(ok, flat_t[at], 0.0), jnp.where(ok, flat_df[at], 1.0))
    return p.at[sel].set(got, mode="drop")

  steps = (jnp.sum(flat_need) + chunk - 1) // chunk
  return jax.lax.fori_loop(0, steps, body, jnp.ones((size,), jnp.float32)).reshape(shape)


def t_test(t: chex.Array, df: chex.Array):
  """Two-sided p-value of Student's t and its signed normal equivalent z.

  `z = sign(t) Phi^-1(1 - p/2)`, computed as `-ndtri(p/2)` (never
  `ndtri(1 - p/2)`, which saturates near p = 1e-7), with p from
  `betainc(df/2, 1/2, df/(df + t^2))`. Float32 `betainc` loses accuracy for
  large df (0.4% at df = 4000), where Wallace's approximation is better than
  1e-4, so it is used for df >= 200 (and p = 2 Phi(-|z|)); it also takes over
  where p underflows float32 (p < 1e-25: z the larger of the two, within 1% of the exact; measured as
  `_wallace_z`'s bounds). |z| is capped at `Z_MAX`; t = 0 gives p = 1 exactly.

  Returns:
    (z, p), each of the broadcast shape of t and df.
  """
  t, df = jnp.broadcast_arrays(jnp.asarray(t, jnp.float32), jnp.asarray(df, jnp.float32))
  abs_t = jnp.abs(t)
  df = jnp.maximum(df, 1.0)
  large_df = df >= 200.0
  p_beta = _sparse_t_p(abs_t, df, ~large_df & (abs_t > 0))
  z_beta = -jax.scipy.special.ndtri(jnp.clip(p_beta, _TINY, 1.0) / 2.0)
  z_wal = _wallace_z(abs_t, df)
  z = jnp.where(large_df, z_wal, jnp.where(p_beta > 1e-25, z_beta, jnp.maximum(z_wal, z_beta)))
  z = jnp.clip(jnp.nan_to_num(z, nan=0.0, posinf=Z_MAX), 0.0, Z_MAX)
  p = jnp.where(large_df, 2.0 * jax.scipy.special.ndtr(-z), p_beta)
  return jnp.sign(t) * z, jnp.clip(p, 0.0, 1.0)


def t_to_z(t: chex.Array, df: chex.Array) -> chex.Array:
  """Signed normal equivalent z of a t statistic (see `t_test`)."""
  return t_test(t, df)[0]


def z_two_sided_p(z: chex.Array) -> chex.Array:
  """Two-sided normal p-value 2 * Phi(-|z|) (float32; underflows to 0 for |z| > ~13)."""
  return 2.0 * jax.scipy.special.ndtr(-jnp.abs(z))


# Below df = 8 the expansion drifts (0.889x scipy's quantile at df = 1): scipy's quantiles at 65 df spaced evenly in
# log df, interpolated in log-log space (within 4e-4 of scipy, relatively).
_T975_TABLE_TOP = 8.0
_T975_LOG_DF = np.log(np.geomspace(1.0, _T975_TABLE_TOP, 65))
_T975_LOG_Q = np.log(sps.t.ppf(0.975, np.exp(_T975_LOG_DF)))


def _t_quantile_975(df: chex.Array) -> chex.Array:
  """97.5% quantile of Student's t: within 4e-4 of scipy's, relatively, at every df >= 1 (df below 1 reads 1).

  A table of scipy's quantiles interpolated below df = 8, the Cornish-Fisher / Hill expansion above (within 1.1e-5
  of scipy at 8, exact in the normal limit). Welch's df falls to min_group - 1 (a cold audit: the expansion alone
  gave intervals 11% too narrow at df = 1).
  """
  z = _Z975
  g1 = (z**3 + z) / 4.0
  g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
  g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
  g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
  d = jnp.maximum(df, 1.0)
  expansion = z + g1 / d + g2 / d**2 + g3 / d**3 + g4 / d**4
  low = jnp.minimum(d, _T975_TABLE_TOP)
  table = jnp.exp(jnp.interp(jnp.log(low), _T975_LOG_DF.astype(np.float32), _T975_LOG_Q.astype(np.float32)))
  return jnp.where(d < _T975_TABLE_TOP, table, expansion)


def welch(n1, m1, v1, n2, m2, v2):
  """Welch's unequal-variance t test of mean 1 versus mean 2.

  Returns:
    (t, df, se) with the Welch-Satterthwaite df. Degenerate inputs (n < 2,
    zero variance on both sides) give finite values: t = 0 where se = 0, df falls
    back to n1 + n2 - 2.
  """
  a = v1 / jnp.maximum(n1, 1.0)
  b = v2 / jnp.maximum(n2, 1.0)
  se2 = a + b
  denom = a * a / jnp.maximum(n1 - 1.0, 1.0) + b * b / jnp.maximum(n2 - 1.0, 1.0)
  df_fallback = jnp.maximum(n1 + n2 - 2.0, 1.0)
  df = jnp.where(denom > 0, se2 * se2 / jnp.where(denom > 0, denom, 1.0), df_fallback)
  # Past float32's range (a side's variance / n above ~1.8e19: a spread of 4e9 x sqrt(n), which ingest's 1e15
  # allows) se2^2 and denom overflow to inf/inf = NaN, and the test read z = 0 (a cold statistics audit); below it
  # (se2^2 under float32's smallest normal, e.g. a spread of 1e-9 at 40 rows) they flush to 0 and df fell back to
  # n1 + n2 - 2, a p-value too small (a review). There the same df from the shares of se2, which neither overflows
  # nor underflows; elsewhere the expression above, so every other figure is bit for bit unchanged.
  wa, wb = a / jnp.where(se2 > 0, se2, 1.0), b / jnp.where(se2 > 0, se2, 1.0)
  shares = wa * wa / jnp.maximum(n1 - 1.0, 1.0) + wb * wb / jnp.maximum(n2 - 1.0, 1.0)
  df_shares = jnp.where(shares > 0, 1.0 / jnp.where(shares > 0, shares, 1.0), df_fallback)
  in_range = jnp.isfinite(se2 * se2) & jnp.isfinite(denom) & ((se2 * se2 >= jnp.finfo(jnp.float32).tiny) | (se2 == 0))
  df = jnp.where(in_range, df, df_shares)
  df = jnp.clip(df, 1.0, 1e7)
  se = jnp.sqrt(se2)
  diff = m1 - m2
  # se2 = 0: after `moments`' floor, only where every row of both sides lies so close to the shift that the floor
  # itself underflows float32 (|x - shift| below ~1e-17); their gap is then the sums' rounding, no evidence. It was
  # read as unbounded (|z| = Z_MAX), and an audit found, with `--adjust`, a binary measure's residuals exactly 0 in
  # a stratum without events about a centre of ~1e-18 (their float64 mean): 20 cohorts of a `confounded --adjust`
  # run were exploration candidates at z 40 on a gap of 6.6e-24. Two truly constant sides away from the shift keep
  # the floor's spread and a strong, finite gap. (A measure whose whole spread is below ~1e-17 cannot be tested in
  # float32: rescale it.)
  t = jnp.where(se2 > 0, diff / jnp.where(se2 > 0, se, 1.0), 0.0)
  return t, df, se


def two_proportion(n1, p1, n2, p2):
  """Two-proportion z test with the pooled standard error under H0.

  Returns:
    (z, se_unpooled) where z^2 equals Pearson's chi-square of the 2x2 table
    without continuity correction.
  """
  n_tot = jnp.maximum(n1 + n2, 1.0)
  pooled = (n1 * p1 + n2 * p2) / n_tot
  var0 = pooled * (1 - pooled) * (1.0 / jnp.maximum(n1, 1.0) + 1.0 / jnp.maximum(n2, 1.0))
  diff = p1 - p2
  z = jnp.where(var0 > 0, diff / jnp.sqrt(jnp.where(var0 > 0, var0, 1.0)), 0.0)
  se_unpooled = jnp.sqrt(p1 * (1 - p1) / jnp.maximum(n1, 1.0) + p2 * (1 - p2) / jnp.maximum(n2, 1.0))
  return jnp.clip(z, -Z_MAX, Z_MAX), se_unpooled


def _wallace_signed(t: chex.Array, df: chex.Array) -> chex.Array:
  return jnp.sign(t) * jnp.minimum(_wallace_z(jnp.abs(t), jnp.maximum(df, 1.0)), Z_MAX)


def _binary_test(n1, m1, n2, m2):
  """Rates, two-proportion z and whether the normal approximation holds.

  The approximation needs >= 5 expected events and non-events on each side,
  tested as min(n1, n2) * min(events, non-events) >= 5 n_tot: whole numbers,
  exact in float32 below 2^24. Event counts are integers: rounding removes
  the float32 error of shift + s1/n.

  Returns:
    (p1, p2, z, se_unpooled, expected_ok).
  """
  p1 = jnp.clip(jnp.round(m1 * n1) / jnp.maximum(n1, 1.0), 0.0, 1.0)
  p2 = jnp.clip(jnp.round(m2 * n2) / jnp.maximum(n2, 1.0), 0.0, 1.0)
  z_b, se_b = two_proportion(n1, p1, n2, p2)
  events = jnp.round(n1 * p1 + n2 * p2)
  n_tot = n1 + n2
  expected_ok = jnp.minimum(n1, n2) * jnp.minimum(events, n_tot - events) >= MIN_EXPECTED * n_tot
  return p1, p2, z_b, se_b, expected_ok


def screen(
  group: chex.Array, rest: chex.Array, shift: chex.Array, is_binary: chex.Array, *, min_group: chex.Array | float
):
  """`(z, valid)` of `compare(..., z_method="wallace")`, the same numbers without the other fields.

  The observation's features need only these for every pixel (tens of
  thousands of tests per step); `compare` computes intervals, effect sizes
  and p-values besides.
  """
  group = jnp.asarray(group, jnp.float32)
  rest = jnp.asarray(rest, jnp.float32)
  n1, m1, v1 = moments(group, shift)
  n2, m2, v2 = moments(rest, shift)
  c1, c2 = centered_mean(group), centered_mean(rest)  # the gap without the shift's rounding
  t, df, _ = welch(n1, c1, v1, n2, c2, v2)
  z_w = _wallace_signed(t, df)
  _, _, z_b, _, expected_ok = _binary_test(n1, m1, n2, m2)
  is_binary = jnp.broadcast_to(jnp.asarray(is_binary, bool), n1.shape)
  valid = (n1 >= min_group) & (n2 >= min_group) & jnp.where(is_binary, expected_ok, True)
  z = jnp.where(valid, jnp.where(is_binary, z_b, z_w), 0.0)
  return jnp.nan_to_num(z, nan=0.0, posinf=1e30, neginf=-1e30), valid


def compare(
  group: chex.Array,
  rest: chex.Array,
  shift: chex.Array,
  is_binary: chex.Array,
  *,
  min_group: chex.Array | float = 11.0,
  z_method: str = "exact",
  only: chex.Array | None = None,
) -> Comparison:
  """Compares a group with the rest of its cohort.

  Args:
    group: `[..., 3]` shifted sufficient statistics of the group.
    rest: `[..., 3]` of the rest of the cohort.
    shift: the measure's centre (test scale; `ingest.measure_shift`), broadcastable to `[...]`.
    is_binary: bool, broadcastable to `[...]`: two-proportion z instead of Welch.
    min_group: a side with fewer rows is not tested (the small-cell rule).
    z_method: how Welch t becomes z. "exact": from the exact p (see
      `t_test`). "wallace": Wallace's closed form (within 0.6% of exact for
      df >= 10; no incomplete beta; used for observation features). "bound":
      z = t, an upper bound on |z| (|t| >= |z| always) that screens out
      cohorts that cannot be significant; p is then 1.
    only: bool, broadcastable to `[...]`: the tests wanted (default all);
      the others are not run (no incomplete beta) and come back invalid.

  Returns:
    A `Comparison`; invalid tests have z = 0 and p = 1.
  """
  group = jnp.asarray(group, jnp.float32)
  rest = jnp.asarray(rest, jnp.float32)
  n1, m1, v1 = moments(group, shift)
  n2, m2, v2 = moments(rest, shift)
  c1, c2 = centered_mean(group), centered_mean(rest)  # the gap without the shift's rounding
  big_enough = (n1 >= min_group) & (n2 >= min_group)
  if only is not None:
    big_enough = big_enough & only

  # Continuous: Welch t -> exact p -> z.
  t, df_w, se_w = welch(n1, c1, v1, n2, c2, v2)
  if z_method == "exact":
    # Untested elements get t = 0: they skip the incomplete beta (`t_test`).
    needed = big_enough & ~jnp.broadcast_to(jnp.asarray(is_binary, bool), n1.shape)
    z_w, p_w = t_test(jnp.where(needed, t, 0.0), jnp.where(needed, df_w, 1.0))
  elif z_method == "wallace":
    z_w = _wallace_signed(t, df_w)
    p_w = 2.0 * jax.scipy.special.ndtr(-jnp.abs(z_w))
  elif z_method == "bound":
    z_w, p_w = jnp.clip(t, -Z_MAX, Z_MAX), jnp.ones_like(t)
  else:
    raise ValueError(f"z_method must be 'exact', 'wallace' or 'bound', got {z_method!r}")
  p1, p2, z_b, se_b, expected_ok = _binary_test(n1, m1, n2, m2)

  is_binary = jnp.broadcast_to(jnp.asarray(is_binary, bool), n1.shape)
  valid = big_enough & jnp.where(is_binary, expected_ok, True)
  m1 = jnp.where(is_binary, p1, m1)
  m2 = jnp.where(is_binary, p2, m2)
  diff = jnp.where(is_binary, p1 - p2, c1 - c2)
  se = jnp.where(is_binary, se_b, se_w)
  df = jnp.where(is_binary, 1e6, df_w)
  z = jnp.where(valid, jnp.where(is_binary, z_b, z_w), 0.0)
  p = jnp.where(is_binary, z_two_sided_p(z_b), p_w)
  p = jnp.where(valid, jnp.clip(p, 0.0, 1.0), 1.0)
  half = jnp.where(is_binary, _Z975, _t_quantile_975(df)) * se
  pooled_sd = jnp.sqrt((v1 + v2) / 2.0)
  smd_cont = jnp.where(pooled_sd > 0, diff / jnp.where(pooled_sd > 0, pooled_sd, 1.0), 0.0)
  cohen_h = 2 * jnp.arcsin(jnp.sqrt(p1)) - 2 * jnp.arcsin(jnp.sqrt(p2))
  smd = jnp.where(is_binary, cohen_h, smd_cont)
  ratio_bin = jnp.where(p2 > 0, p1 / jnp.where(p2 > 0, p2, 1.0), jnp.where(p1 > 0, 1e6, 1.0))
  ratio = jnp.where(is_binary, ratio_bin, jnp.where(m2 != 0, m1 / jnp.where(m2 != 0, m2, 1.0), 1.0))

  def finite(x):
    return jnp.nan_to_num(x, nan=0.0, posinf=1e30, neginf=-1e30)

  return Comparison(
    n_group=n1,
    n_rest=n2,
    mean_group=finite(m1),
    mean_rest=finite(m2),
    var_group=finite(v1),
    var_rest=finite(v2),
    diff=finite(diff),
    se=finite(se),
    ci_low=finite(diff - half),
    ci_high=finite(diff + half),
    smd=finite(smd),
    ratio=finite(ratio),
    df=finite(df),
    z=finite(z),
    p_value=finite(p),
    valid=valid,
  )


def heterogeneity_z(child: Comparison, other: Comparison) -> chex.Array:
  """z of the difference between two independent effects (child vs rest of parent).

  `(diff_c - diff_o) / sqrt(se_c^2 + se_o^2)`; 0 where `other` is not testable
  (then the child carries the whole parent effect and is not new).
  """
  se2 = child.se**2 + other.se**2
  z = jnp.where(se2 > 0, (child.diff - other.diff) / jnp.sqrt(jnp.where(se2 > 0, se2, 1.0)), 0.0)
  return jnp.where(other.valid, jnp.clip(z, -Z_MAX, Z_MAX), 0.0)
