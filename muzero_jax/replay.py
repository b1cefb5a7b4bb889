"""Device-resident prioritised replay of self-play trajectories, and n-step targets.

Layout: a ring buffer over time, one column per self-play environment slot:
every field is ``[R, B, ...]`` (``R = config.replay_rows`` steps, ``B =
config.num_envs`` slots). Row ``r + 1`` of a column is the step after row ``r``
(the self-play loop resets finished episodes in place and the ``done`` flag marks
the boundary), so a sampled position reads a window of ``L = K + n + 1``
consecutive rows: K unroll steps plus n-step bootstrap.

Episode ends: ``done = terminated | truncated`` stops the n-step sum. A terminated episode's value past its end
is 0; a truncated one (a time limit, not the task's end) goes on in the world, so its n-step targets bootstrap from
``truncation_value``, the network's value of the observation the episode was cut at (self-play stores it, since the
slot resets in place and that observation is not kept, so reanalysis cannot refresh it: it stays the acting
network's raw value, where the other bootstraps are search values); in the unrolled targets the cut observation's
value target is that value and the value and reward targets past it are unknown (their losses off,
`Targets.known`). Before 2026-12-07 truncation was taken as termination, which biased values near a hidden time
limit (CartPole's 500 steps) downwards.

A position is sampleable once ``K + n`` newer rows exist (its whole window is in
the buffer). Its priority is set then, to ``|root value - n-step target| + eps``
(MuZero Appendix G); when the learner reanalyses a sampled position, its
priority is recomputed from the fresh root value and target. Sampling is stratified proportional to ``priority^alpha``; importance weights
``(N P(i))^-beta`` are normalised by their batch maximum (Schaul et al., 2016).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from muzero_jax.config import MuZeroConfig

__all__ = [
  "Trajectory",
  "Replay",
  "Sample",
  "Targets",
  "init_replay",
  "add_trajectory",
  "valid_positions",
  "sample",
  "update_priorities",
  "n_step_return",
  "n_step_targets",
  "make_targets",
  "priority_from_error",
]


@struct.dataclass
class Trajectory:
  """``T`` self-play steps of ``B`` environments (time-major)."""

  obs: chex.Array  # [T, B, *obs_shape] observation the action was chosen at
  action: chex.Array  # [T, B] int32
  reward: chex.Array  # [T, B] float32, reward of the step
  done: chex.Array  # [T, B] bool, the step ended the episode (terminated | truncated)
  policy: chex.Array  # [T, B, A] search policy (action_weights)
  root_value: chex.Array  # [T, B] search value at the observation
  mask: chex.Array  # [T, B, A] bool legal actions at the observation
  # [T, B] float32 the network's value of the observation the step ended on where it truncated the episode
  # (truncated and not terminated), else 0: the n-step targets' bootstrap past a time limit
  truncation_value: chex.Array
  truncated: chex.Array  # [T, B] bool the step truncated the episode (truncated and not terminated)


@struct.dataclass
class Replay:
  """The ring buffer (see module docstring)."""

  obs: chex.Array  # [R, B, *obs_shape]
  action: chex.Array  # [R, B] int32
  reward: chex.Array  # [R, B] float32
  done: chex.Array  # [R, B] bool
  policy: chex.Array  # [R, B, A] float32
  root_value: chex.Array  # [R, B] float32
  mask: chex.Array  # [R, B, A] bool
  truncation_value: chex.Array  # [R, B] float32 (`Trajectory.truncation_value`)
  truncated: chex.Array  # [R, B] bool
  priority: chex.Array  # [R, B] float32, |value error| + eps (before the exponent alpha)
  next_row: chex.Array  # [] int32, row the next step is written to
  rows_written: chex.Array  # [] int32, rows holding data (saturates at R)


@struct.dataclass
class Sample:
  """A batch of ``N`` sampled windows of ``L = K + n + 1`` rows."""

  row: chex.Array  # [N] int32 ring row of the position
  col: chex.Array  # [N] int32 environment slot of the position
  obs: chex.Array  # [N, *obs_shape] observation at the sampled position
  window_obs: chex.Array  # [M, L, *obs_shape] window observations of the first M samples (reanalysed)
  action: chex.Array  # [N, L] int32
  reward: chex.Array  # [N, L] float32
  done: chex.Array  # [N, L] bool
  policy: chex.Array  # [N, L, A] float32
  root_value: chex.Array  # [N, L] float32
  mask: chex.Array  # [N, L, A] bool
  truncation_value: chex.Array  # [N, L] float32
  truncated: chex.Array  # [N, L] bool
  weight: chex.Array  # [N] float32 importance weight, max 1


@struct.dataclass
class Targets:
  """Learner targets for ``K + 1`` unroll positions of one sample (unbatched)."""

  value: chex.Array  # [K+1] n-step value targets (0 after a termination; `make_targets` for a truncation)
  reward: chex.Array  # [K+1] reward of the step into position k (entry 0 unused, 0)
  policy: chex.Array  # [K+1, A] search policies
  legal: chex.Array  # [K+1, A] float32 legality (1 = legal)
  alive: chex.Array  # [K+1] float32, 1 while position k is in the sampled episode
  # [K+1] float32, 1 where the value and reward targets are known: 0 past the observation a time limit cut the
  # episode at (after a termination they are known: 0, absorbing)
  known: chex.Array


def init_replay(config: MuZeroConfig, observation_shape, num_actions: int) -> Replay:
  """An empty buffer of ``config.replay_rows`` x ``config.num_envs`` positions."""
  rows, cols = config.replay_rows, config.num_envs
  return Replay(
    obs=jnp.zeros((rows, cols, *observation_shape), jnp.float32),
    action=jnp.zeros((rows, cols), jnp.int32),
    reward=jnp.zeros((rows, cols), jnp.float32),
    done=jnp.zeros((rows, cols), bool),
    policy=jnp.zeros((rows, cols, num_actions), jnp.float32),
    root_value=jnp.zeros((rows, cols), jnp.float32),
    mask=jnp.zeros((rows, cols, num_actions), bool),
    truncation_value=jnp.zeros((rows, cols), jnp.float32),
    truncated=jnp.zeros((rows, cols), bool),
    priority=jnp.zeros((rows, cols), jnp.float32),
    next_row=jnp.zeros((), jnp.int32),
    rows_written=jnp.zeros((), jnp.int32),
  )


def _ages(replay: Replay) -> chex.Array:
  """``[R]`` age of each row: 0 = newest."""
  num_rows = replay.action.shape[0]
  return (replay.next_row - 1 - jnp.arange(num_rows)) % num_rows


def valid_positions(replay: Replay, config: MuZeroConfig) -> chex.Array:
  """``[R, B]`` bool: positions whose whole window is in the buffer."""
  ages = _ages(replay)
  ok = (ages < replay.rows_written) & (ages >= config.unroll_steps + config.n_step)
  return jnp.broadcast_to(ok[:, None], replay.action.shape)


def n_step_return(
  reward: chex.Array,
  done: chex.Array,
  bootstrap: chex.Array,
  *,
  discount: float,
  truncation_value: chex.Array | None = None,
) -> chex.Array:
  """``sum_{i<n} g^i prod_{j<i}(1-d_j) (r_i + g u_i) + g^n v_n prod_{j<n}(1-d_j)`` for one position.

  Args:
    reward: ``[n]`` rewards ``r_t .. r_{t+n-1}``.
    done: ``[n]`` episode-ended flags of the same steps.
    bootstrap: ``[]`` value estimate at ``t + n``.
    discount: ``g``.
    truncation_value: ``[n]`` ``u_i``, the value of the observation step i truncated the episode at (0 where it did
      not; `Trajectory.truncation_value`); None: all 0.
  """
  chex.assert_rank([reward, done, bootstrap], [1, 1, 0])
  n = reward.shape[0]
  cont = jnp.cumprod(1.0 - done.astype(jnp.float32))
  before = jnp.concatenate([jnp.ones((1,), jnp.float32), cont[:-1]])
  powers = discount ** jnp.arange(n, dtype=jnp.float32)
  step = reward if truncation_value is None else reward + discount * truncation_value
  return jnp.sum(powers * step * before) + discount**n * bootstrap * cont[-1]


def n_step_targets(reward, done, value, *, n: int, discount: float, num_targets: int, truncation_value=None):
  """n-step returns for the first ``num_targets`` positions of a window.

  Args:
    reward, done, value: ``[L]`` with ``L >= num_targets + n``; truncation_value: ``[L]`` or None
      (`n_step_return`).

  Returns:
    ``[num_targets]``; entry k bootstraps from ``value[k + n]``.
  """
  chex.assert_rank([reward, done, value], 1)
  cut = jnp.zeros_like(reward) if truncation_value is None else truncation_value

  def one(k):
    r = jax.lax.dynamic_slice_in_dim(reward, k, n)
    d = jax.lax.dynamic_slice_in_dim(done, k, n)
    u = jax.lax.dynamic_slice_in_dim(cut, k, n)
    return n_step_return(r, d, value[k + n], discount=discount, truncation_value=u)

  return jax.vmap(one)(jnp.arange(num_targets))


def make_targets(
  reward, done, root_value, policy, mask, *, config: MuZeroConfig, truncation_value=None, truncated=None
) -> Targets:
  """Unroll targets of one window (unbatched; ``vmap`` over samples).

  Args:
    reward, done, root_value: ``[L]``; policy, mask: ``[L, A]`` (first ``K+1`` used); truncation_value,
      truncated: ``[L]`` or None (none truncated; `n_step_return`).

  After the episode of position 0 terminates inside the window, later positions are
  absorbing: value and reward targets 0, policy and legality losses off. After it is truncated at step j, position
  j + 1 is the observation it was cut at (value target its `truncation_value`, reward target r_j), and the value
  and reward targets past it are unknown (`known` 0: their losses off; a review: trained to 0 they taught the
  unrolled model the time limit's downward bias the bootstrap removes).
  """
  k1 = config.unroll_steps + 1
  done_f = done.astype(jnp.float32)
  alive = jnp.concatenate([jnp.ones((1,)), jnp.cumprod(1.0 - done_f[: k1 - 1])])
  cut_f = jnp.zeros_like(done_f) if truncated is None else truncated.astype(jnp.float32)
  cut_value = jnp.zeros_like(done_f) if truncation_value is None else truncation_value
  cut_by = jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(cut_f[: k1 - 1] * alive[:-1])])  # 1 from the cut + 1 on
  first_cut = cut_by - jnp.concatenate([jnp.zeros((1,)), cut_by[:-1]])  # 1 at the cut observation's position
  known = jnp.concatenate([jnp.ones((1,)), 1.0 - cut_by[:-1]])
  values = n_step_targets(
    reward,
    done,
    root_value,
    n=config.n_step,
    discount=config.discount,
    num_targets=k1,
    truncation_value=truncation_value,
  )
  step_reward = jnp.concatenate([jnp.zeros((1,)), reward[: k1 - 1] * alive[:-1]])
  return Targets(
    value=values * alive + first_cut * jnp.concatenate([jnp.zeros((1,)), cut_value[: k1 - 1]]),
    reward=step_reward,
    policy=policy[:k1],
    legal=mask[:k1].astype(jnp.float32),
    alive=alive,
    known=known,
  )


def priority_from_error(error: chex.Array, eps: float, fallback: chex.Array) -> chex.Array:
  """``|error| + eps``; non-finite errors get ``fallback`` (e.g. the current max priority)."""
  return jnp.where(jnp.isfinite(error), jnp.abs(error) + eps, fallback)


def _window_rows(row: chex.Array, length: int, num_rows: int) -> chex.Array:
  return (row[:, None] + jnp.arange(length)[None, :]) % num_rows


def add_trajectory(replay: Replay, traj: Trajectory, *, config: MuZeroConfig) -> Replay:
  """Writes ``T`` new rows and sets the priorities of positions that became sampleable."""
  num_rows, num_cols = replay.action.shape
  steps = traj.action.shape[0]
  chex.assert_shape(traj.action, (steps, num_cols))
  rows = (replay.next_row + jnp.arange(steps)) % num_rows
  fields = ("obs", "action", "reward", "done", "policy", "root_value", "mask", "truncation_value", "truncated")
  replay = replay.replace(**{f: getattr(replay, f).at[rows].set(getattr(traj, f)) for f in fields})
  replay = replay.replace(
    next_row=(replay.next_row + steps) % num_rows,
    rows_written=jnp.minimum(replay.rows_written + steps, num_rows),
    priority=replay.priority.at[rows].set(0.0),
  )
  # Positions with age in [K+n, K+n+T) have just got their full window.
  horizon = config.unroll_steps + config.n_step
  ages = horizon + jnp.arange(steps)
  new_rows = (replay.next_row - 1 - ages) % num_rows
  win = _window_rows(new_rows, config.n_step + 1, num_rows)  # [T, n+1]
  reward, done, value = replay.reward[win], replay.done[win], replay.root_value[win]  # [T, n+1, B]
  cut = replay.truncation_value[win]

  def one(r, d, v, u):
    return n_step_return(r[:-1], d[:-1], v[-1], discount=config.discount, truncation_value=u[:-1])

  ret = jax.vmap(jax.vmap(one, in_axes=1), in_axes=0)(reward, done, value, cut)  # [T, B]
  fallback = jnp.maximum(jnp.max(replay.priority), 1.0)
  prio = priority_from_error(replay.root_value[new_rows] - ret, config.priority_eps, fallback)
  written = (ages < replay.rows_written)[:, None]
  prio = jnp.where(written, prio, replay.priority[new_rows])
  return replay.replace(priority=replay.priority.at[new_rows].set(prio))


def sampling_cdf(p: chex.Array) -> chex.Array:
  """The cumulative sum of the sampling weights ``p`` [N] (>= 0), in which a zero weight adds exactly nothing.

  XLA lowers ``cumsum`` to a window reduction that may sum neighbouring outputs in different orders, so in
  float32 a zero weight could get a positive step (a cold audit: on XLA:CPU, a few per 10^5) and be drawn; its
  importance weight, from a floored probability, then swamped the batch's. Each zero weight's entry repeats the
  running maximum instead.
  """
  return jax.lax.cummax(jnp.where(p > 0, jnp.cumsum(p), 0.0))


def sample(replay: Replay, key: chex.PRNGKey, *, config: MuZeroConfig, num_windows: int = 0) -> Sample:
  """Stratified prioritised sample of ``config.batch_size`` windows.

  Observations are gathered at the sampled positions, and for the whole window
  only for the first ``num_windows`` samples (those that will be reanalysed).

  Requires at least one valid position (the learner checks
  ``config.min_replay_size`` first); otherwise the result is meaningless.
  """
  num_rows, num_cols = replay.action.shape
  n = config.batch_size
  valid = valid_positions(replay, config).reshape(-1)
  p = jnp.where(valid, replay.priority.reshape(-1) ** config.priority_alpha, 0.0)
  cdf = sampling_cdf(p)
  total = cdf[-1]
  key_u, key_perm = jax.random.split(key)
  u = (jnp.arange(n) + jax.random.uniform(key_u, (n,))) / n * total
  u = jnp.minimum(u, total * (1.0 - 1e-6))
  flat = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, p.shape[0] - 1)
  # Strata come out sorted by buffer index; shuffle so any prefix is a random subset.
  flat = jax.random.permutation(key_perm, flat)
  prob = jnp.maximum(p[flat] / jnp.maximum(total, 1e-30), 1e-30)
  count = jnp.maximum(jnp.sum(valid), 1)
  weight = (count * prob) ** (-config.priority_beta)
  weight = weight / jnp.max(weight)
  row, col = flat // num_cols, flat % num_cols
  win = _window_rows(row, config.window_length, num_rows)  # [N, L]
  c = col[:, None]
  return Sample(
    row=row.astype(jnp.int32),
    col=col.astype(jnp.int32),
    obs=replay.obs[row, col],
    window_obs=replay.obs[win[:num_windows], c[:num_windows]],
    action=replay.action[win, c],
    reward=replay.reward[win, c],
    done=replay.done[win, c],
    policy=replay.policy[win, c],
    root_value=replay.root_value[win, c],
    mask=replay.mask[win, c],
    truncation_value=replay.truncation_value[win, c],
    truncated=replay.truncated[win, c],
    weight=weight,
  )


def update_priorities(
  replay: Replay, row: chex.Array, col: chex.Array, error: chex.Array, *, config: MuZeroConfig
) -> Replay:
  """Sets the priorities of positions ``(row, col)`` ``[N]`` from value errors ``[N]``."""
  fallback = jnp.maximum(jnp.max(replay.priority), 1.0)
  prio = priority_from_error(error, config.priority_eps, fallback)
  return replay.replace(priority=replay.priority.at[row, col].set(prio))
