"""Supervised targets for a trained agent: which moves lead somewhere, read at the root and through the model.

Self-play teaches an agent the return of its own episodes. A search that uses
the agent for something else (a best-first search over a frontier, say) may
know, on training tasks, which moves of a position lead to what it is after.
`fine_tune` trains the agent's networks on such marks, one position at a time
(no unroll along played moves; the search's setting, Schrittwieser et al. 2020, with supervised targets in place
of n-step returns), with these terms for a batch of positions `s_i`:

    l = w_p CE(pi*, p_0) + w_v sum_ij w_ij CE(phi(y_ij), v(g(s_i, a_ij))) / sum_ij w_ij
        + w_r sum_ij w_ij CE(phi(0), r(s_i, a_ij)) / sum_ij w_ij + w_l BCE(mask, legal_i)

(the policy and legality terms are means over the batch's positions, the policy's over those with a marked move;
the value and reward terms weighted means over all the batch's sampled moves, so a padded sample, weight 0, adds
nothing),
* policy: `pi*` is uniform over the marked moves (positions with none add no
  policy term), so the prior ranks the marked moves first;
* value through the model: for sampled moves `a_j` (marked and unmarked), the
  value of the model's next state learns the move's mark `y_j` in {0, 1} and its
  reward learns 0, so that a search's Q of a move, reward plus discounted value
  of where it leads in the model, reads as the chance that the move is marked;
* legality at the root, so that the search's masks keep working.

`phi` is the two-hot target of the transformed scalar, as in the learner. The
environment is not needed: positions are observations with their legal masks,
so `muzero_jax` stays independent of any environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from muzero_jax import support
from muzero_jax.config import MuZeroConfig
from muzero_jax.networks import make_network


@dataclasses.dataclass(frozen=True)
class MarkedPositions:
  """Positions of one observation shape with marked moves (numpy; `fine_tune` batches them)."""

  obs: np.ndarray  # [N, *obs_shape] float32
  legal: np.ndarray  # [N, A] bool
  marked: np.ndarray  # [N, A] bool: moves that lead where the search wants to go (subset of legal)
  actions: np.ndarray  # [N, K] int32: moves whose model successor learns its mark
  labels: np.ndarray  # [N, K] float32 in {0, 1}: each sampled move's mark
  weights: np.ndarray  # [N, K] float32: each sampled move's weight (0 pads a short row)

  def __post_init__(self):
    n, a = self.legal.shape
    k = self.actions.shape[1]
    shapes = {
      "obs": (self.obs.shape[0],),
      "marked": self.marked.shape,
      "labels": self.labels.shape,
      "weights": self.weights.shape,
    }
    want = {"obs": (n,), "marked": (n, a), "labels": (n, k), "weights": (n, k)}
    bad = [f"{f} {s}" for f, s in shapes.items() if s != want[f]]
    if bad:
      raise ValueError(f"MarkedPositions: legal is {(n, a)} and actions {(n, k)}, but {', '.join(bad)}")
    if np.any(self.marked & ~self.legal):
      raise ValueError("MarkedPositions: a marked move is not legal")
    if np.any((self.actions < 0) | (self.actions >= a)):
      raise ValueError(f"MarkedPositions: a sampled move is outside [0, {a})")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FineTuneConfig:
  """Settings of `fine_tune`."""

  steps: int = 1000  # AdamW steps
  batch_size: int = 32  # positions per step, drawn with replacement from one observation shape's group
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  max_grad_norm: float = 5.0  # global-norm clipping of each step's gradient
  policy_weight: float = 1.0  # w_p
  value_weight: float = 1.0  # w_v
  reward_weight: float = 1.0  # w_r
  legality_weight: float = 1.0  # w_l

  def __post_init__(self):
    if self.steps < 1 or self.batch_size < 1:
      raise ValueError(f"FineTuneConfig needs steps and batch_size >= 1, got {self.steps} and {self.batch_size}")
    rates = dataclasses.astuple(self)[2:]
    if not all(np.isfinite(r) and r >= 0 for r in rates) or self.learning_rate <= 0:
      raise ValueError(f"FineTuneConfig: rates and weights must be finite and >= 0 (learning rate > 0), got {self}")


def _loss(params, network, config: MuZeroConfig, tune: FineTuneConfig, batch):
  obs, legal, marked, actions, labels, weights = batch
  latent = network.apply(params, obs, method="represent")
  policy_logits, _, legal_logits = network.apply(params, latent, method="predict")
  logp = jax.nn.log_softmax(jnp.where(legal, policy_logits, -1e9), axis=-1)
  n_marked = marked.sum(axis=-1)
  has = n_marked > 0
  target = marked / jnp.maximum(n_marked, 1)[:, None]
  policy = -jnp.sum(jnp.where(marked, target * logp, 0.0), axis=-1)
  policy = jnp.sum(jnp.where(has, policy, 0.0)) / jnp.maximum(has.sum(), 1)
  legality = optax.sigmoid_binary_cross_entropy(legal_logits, legal.astype(jnp.float32)).mean()
  b, k = actions.shape
  rep = jnp.repeat(latent, k, axis=0)
  next_latent, reward_logits = network.apply(params, rep, actions.reshape(-1), method="dynamics")
  _, value_logits, _ = network.apply(params, next_latent, method="predict")
  eps = config.value_transform_eps
  v_target = support.scalar_to_support(labels.reshape(-1), config.support_size, eps)
  r_target = support.scalar_to_support(jnp.zeros(b * k), config.reward_support_size, eps)
  w = weights.reshape(-1) / jnp.maximum(weights.sum(), 1e-9)
  value = jnp.sum(w * optax.softmax_cross_entropy(value_logits, v_target))
  reward = jnp.sum(w * optax.softmax_cross_entropy(reward_logits, r_target))
  total = (
    tune.policy_weight * policy
    + tune.value_weight * value
    + tune.reward_weight * reward
    + tune.legality_weight * legality
  )
  return total, jnp.stack([total, policy, value, reward, legality])


LOSS_TERMS = ("total", "policy", "value", "reward", "legality")


def fine_tune(
  params,
  config: MuZeroConfig,
  groups: Sequence[MarkedPositions],
  *,
  seed: int,
  tune: FineTuneConfig = FineTuneConfig(),
  log=None,
):
  """`params` trained on `groups` (one per observation shape) for `tune.steps` AdamW steps; (params, history).

  Each step draws one group (with probability proportional to its positions)
  and `tune.batch_size` of its positions (with replacement), from
  `numpy.random.default_rng(seed)`: deterministic given the seed. `history` is
  `[steps, 5]` of the loss terms (`LOSS_TERMS`). `log(step, terms)` is called
  every 100 steps if given.
  """
  groups = [g for g in groups if len(g.legal)]
  if not groups:
    raise ValueError("fine_tune needs at least one position")
  rng = np.random.default_rng(seed)
  sizes = np.asarray([len(g.legal) for g in groups], np.float64)
  share = sizes / sizes.sum()  # a group's chance to be drawn
  opt = optax.chain(
    optax.clip_by_global_norm(tune.max_grad_norm), optax.adamw(tune.learning_rate, weight_decay=tune.weight_decay)
  )
  opt_state = opt.init(params)
  steps = {}

  def step_for(group: MarkedPositions):
    shape = group.obs.shape[1:]
    if shape not in steps:
      network = make_network(config, group.legal.shape[1], shape)

      @jax.jit
      def step(p, s, batch):
        (_, terms), g = jax.value_and_grad(_loss, has_aux=True)(p, network, config, tune, batch)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, terms

      steps[shape] = step
    return steps[shape]

  history = np.zeros((tune.steps, len(LOSS_TERMS)))
  for i in range(tune.steps):
    group = groups[rng.choice(len(groups), p=share)]
    rows = rng.integers(0, len(group.legal), tune.batch_size)
    batch = tuple(
      jnp.asarray(a[rows]) for a in (group.obs, group.legal, group.marked, group.actions, group.labels, group.weights)
    )
    params, opt_state, terms = step_for(group)(params, opt_state, batch)
    history[i] = np.asarray(terms)
    chex.assert_tree_all_finite(history[i])
    if log is not None and (i + 1) % 100 == 0:
      log(i + 1, dict(zip(LOSS_TERMS, history[max(0, i - 99) : i + 1].mean(axis=0), strict=True)))
  return params, history
