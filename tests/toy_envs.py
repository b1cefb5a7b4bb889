"""Tiny deterministic environments for the muzero_jax tests (environment protocol only).

``CoinGrid``: an ``H x W`` grid of coins (values in ``params.coins``) and walls.
Each step picks one cell (action ``a`` = pixel ``(a // W, a % W)``) and collects
its coin; picked cells and walls are illegal. After ``horizon`` picks the episode
terminates. The optimal return is the sum of the ``horizon`` largest coins.

Observation ``[3, H, W]``: remaining coin value / max_coin, legality, steps left
/ horizon (a constant plane). With ``flat=True`` the observation is flattened.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class CoinParams:
  coins: jax.Array  # [H, W] float32 coin value of each cell
  walls: jax.Array  # [H, W] bool, never legal


@struct.dataclass
class CoinState:
  picked: jax.Array  # [H, W] bool
  t: jax.Array  # [] int32 steps taken


@dataclasses.dataclass(frozen=True)
class CoinGrid:
  height: int = 3
  width: int = 4
  horizon: int = 3
  max_coin: float = 3.0
  flat: bool = False

  @property
  def num_actions(self) -> int:
    return self.height * self.width

  @property
  def observation_shape(self) -> tuple[int, ...]:
    shape = (3, self.height, self.width)
    return (int(np.prod(shape)),) if self.flat else shape

  def _obs(self, state: CoinState, params: CoinParams) -> jax.Array:
    legal = (~state.picked & ~params.walls).astype(jnp.float32)
    coins = params.coins * legal / self.max_coin
    left = jnp.full((self.height, self.width), (self.horizon - state.t) / self.horizon, jnp.float32)
    obs = jnp.stack([coins, legal, left]).astype(jnp.float32)
    return obs.reshape(-1) if self.flat else obs

  def reset(self, key, params: CoinParams):
    del key
    state = CoinState(picked=jnp.zeros((self.height, self.width), bool), t=jnp.zeros((), jnp.int32))
    return self._obs(state, params), state

  def action_mask(self, state: CoinState, params: CoinParams) -> jax.Array:
    return (~state.picked & ~params.walls).reshape(-1)

  def step(self, key, state: CoinState, action, params: CoinParams):
    del key
    legal = self.action_mask(state, params)[action]
    reward = jnp.where(legal, params.coins.reshape(-1)[action], 0.0).astype(jnp.float32)
    picked = state.picked.reshape(-1).at[action].set(True).reshape(self.height, self.width)
    new = CoinState(picked=picked, t=state.t + 1)
    terminated = new.t >= self.horizon
    return self._obs(new, params), new, reward, terminated, jnp.zeros((), bool), {}


@dataclasses.dataclass(frozen=True)
class CoinGridExpert(CoinGrid):
  """``CoinGrid`` with an expert (the optional ``expert_logits`` of imitation): the coin's value."""

  def expert_logits(self, obs, state: CoinState, params: CoinParams) -> jax.Array:
    del obs
    return jnp.where(state.picked, 0.0, params.coins).reshape(-1)


def make_coin_pool(env: CoinGrid, size: int, seed: int) -> CoinParams:
  """``size`` random layouts: coins 0..max_coin (integers), about 1/4 walls (coins under walls 0)."""
  rng = np.random.default_rng(seed)
  shape = (size, env.height, env.width)
  coins = rng.integers(0, int(env.max_coin) + 1, size=shape).astype(np.float32)
  walls = rng.random(shape) < 0.25
  walls[:, 0, 0] = False  # at least a few legal cells
  coins = np.where(walls, 0.0, coins)
  return CoinParams(coins=jnp.asarray(coins), walls=jnp.asarray(walls))


def optimal_returns(env: CoinGrid, pool: CoinParams) -> np.ndarray:
  """``[P]`` best return: the sum of the ``horizon`` largest legal coins."""
  coins = np.where(np.asarray(pool.walls), -np.inf, np.asarray(pool.coins)).reshape(len(pool.coins), -1)
  best = -np.sort(-coins, axis=1)[:, : env.horizon]
  return np.where(np.isfinite(best), best, 0.0).sum(1)
