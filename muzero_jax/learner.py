"""The MuZero learner: reanalysis, unrolled loss over K steps, guarded optimiser update.

Loss (Schrittwieser et al. 2020, Appendix G) for one position, unrolling the
dynamics along the stored actions::

    l = sum_{k=0..K} c_k [ w_p CE(pi_k, p_k) + w_v CE(phi(z_k), v_k)
                           + w_r CE(phi(u_k), r_k) [k>=1] + w_l BCE(mask_k, legal_k) ]

with ``c_0 = 1`` and ``c_k = 1/K`` for unrolled steps, ``phi`` the two-hot
encoding of the transformed scalar, and the gradient at the input of the
dynamics scaled by ``config.dynamics_gradient_scale`` (1/2). Per-sample losses
are weighted by prioritised-replay importance weights. A non-finite loss or
gradient skips the update (parameters and optimiser state unchanged) and is
counted.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from muzero_jax import replay as replay_lib
from muzero_jax import support
from muzero_jax.config import MuZeroConfig
from muzero_jax.networks import MuZeroNetwork
from muzero_jax.search import run_search

__all__ = [
  "Batch",
  "LossTerms",
  "make_optimizer",
  "learning_rate_schedule",
  "scale_gradient",
  "reanalyse",
  "make_batch",
  "loss_fn",
  "update_step",
  "learn_step",
]


@struct.dataclass
class Batch:
  """Inputs of one learner update (``N`` positions, ``K`` unroll steps)."""

  obs: chex.Array  # [N, *obs_shape]
  action: chex.Array  # [N, K] int32 actions to unroll
  targets: replay_lib.Targets  # fields [N, K+1, ...]
  weight: chex.Array  # [N] importance weights


@struct.dataclass
class LossTerms:
  """Batch means of the loss terms (summed over unroll steps, 1/K-scaled)."""

  total: chex.Array  # []
  policy: chex.Array  # []
  value: chex.Array  # []
  reward: chex.Array  # []
  legality: chex.Array  # []
  value_error: chex.Array  # [] mean |predicted value - target| at k = 0


def learning_rate_schedule(config: MuZeroConfig) -> optax.Schedule:
  """Linear warm-up to the peak, then cosine decay to ``final_lr_fraction * peak``."""
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=config.warmup_steps,
    decay_steps=config.warmup_steps + config.decay_steps,
    end_value=config.learning_rate * config.final_lr_fraction,
  )


def make_optimizer(config: MuZeroConfig) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW on the warm-up + cosine schedule."""
  return optax.chain(
    optax.clip_by_global_norm(config.max_grad_norm),
    optax.adamw(learning_rate_schedule(config), weight_decay=config.weight_decay),
  )


def scale_gradient(x: chex.Array, scale: float) -> chex.Array:
  """Identity forward; multiplies the gradient by ``scale`` backward."""
  return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def reanalyse(
  params, key: chex.PRNGKey, sample: replay_lib.Sample, *, network: MuZeroNetwork, config: MuZeroConfig
) -> replay_lib.Sample:
  """Re-runs the search with current parameters on the first ``M`` sampled windows.

  Every row of those windows gets a fresh search policy and root value, so both
  the policy targets (rows ``0..K``) and the value-target bootstraps (rows
  ``n..K+n``) reflect the current model (MuZero Reanalyze, Schrittwieser et al.
  2021). ``M = sample.window_obs.shape[0]``.
  """
  num, length = sample.window_obs.shape[:2]
  if num == 0:
    return sample
  obs = sample.window_obs.reshape(num * length, *sample.window_obs.shape[2:])
  mask = sample.mask[:num].reshape(num * length, -1)
  out = run_search(params, key, obs, mask, network=network, config=config)
  policy = out.action_weights.reshape(num, length, -1)
  value = out.root_value.reshape(num, length)
  return sample.replace(policy=sample.policy.at[:num].set(policy), root_value=sample.root_value.at[:num].set(value))


def make_batch(sample: replay_lib.Sample, *, config: MuZeroConfig) -> Batch:
  """Targets from a (possibly reanalysed) sample."""

  def one(r, d, v, p, m, u, c):
    return replay_lib.make_targets(r, d, v, p, m, config=config, truncation_value=u, truncated=c)

  targets = jax.vmap(one)(
    sample.reward, sample.done, sample.root_value, sample.policy, sample.mask, sample.truncation_value, sample.truncated
  )
  return Batch(obs=sample.obs, action=sample.action[:, : config.unroll_steps], targets=targets, weight=sample.weight)


def _cross_entropy(target_probs: chex.Array, logits: chex.Array) -> chex.Array:
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _step_terms(network, config, params, latent, t_k):
  """Per-sample policy, value and legality losses at one unroll position."""
  eps = config.value_transform_eps
  policy_logits, value_logits, legal_logits = network.apply(params, latent, method="predict")
  policy = t_k.alive * _cross_entropy(t_k.policy, policy_logits)
  value_target = support.scalar_to_support(t_k.value, config.support_size, eps)
  value = t_k.known * _cross_entropy(value_target, value_logits)
  legality = t_k.alive * optax.sigmoid_binary_cross_entropy(legal_logits, t_k.legal).mean(-1)
  value_pred = support.logits_to_scalar(value_logits, config.support_size, eps)
  return policy, value, legality, value_pred


def loss_fn(params, batch: Batch, *, network: MuZeroNetwork, config: MuZeroConfig):
  """Importance-weighted MuZero loss; returns ``(loss, (LossTerms, value_pred [N]))``.

  The K unroll steps are a ``lax.scan`` unrolled in the compiled program: on XLA:CPU that ran
  27 -> 36 updates/s (``cpu`` preset, no reanalysis) for about 2 s more compile (benchmarks/README).
  """
  num_unroll = config.unroll_steps
  n = batch.obs.shape[0]
  chex.assert_shape(batch.action, (n, num_unroll))
  chex.assert_shape(batch.targets.value, (n, num_unroll + 1))
  t = batch.targets
  latent = network.apply(params, batch.obs, method="represent")
  policy0, value0, legality0, value_pred = _step_terms(
    network, config, params, latent, jax.tree.map(lambda x: x[:, 0], t)
  )

  def unroll(latent, xs):
    action, t_k = xs
    latent, reward_logits = network.apply(
      params, scale_gradient(latent, config.dynamics_gradient_scale), action, method="dynamics"
    )
    policy, value, legality, _ = _step_terms(network, config, params, latent, t_k)
    reward_target = support.scalar_to_support(t_k.reward, config.reward_support_size, config.value_transform_eps)
    reward = t_k.known * _cross_entropy(reward_target, reward_logits)
    return latent, (policy, value, legality, reward)

  time_major = jax.tree.map(lambda x: jnp.moveaxis(x[:, 1:], 1, 0), t)
  _, (policy_k, value_k, legality_k, reward_k) = jax.lax.scan(
    unroll, latent, (jnp.moveaxis(batch.action, 1, 0), time_major), unroll=True
  )
  scale = 1.0 / num_unroll  # MuZero: unrolled steps' losses scaled by 1/K
  terms = {
    "policy": policy0 + scale * policy_k.sum(0),
    "value": value0 + scale * value_k.sum(0),
    "legality": legality0 + scale * legality_k.sum(0),
    "reward": scale * reward_k.sum(0),
  }
  per_sample = (
    config.policy_loss_weight * terms["policy"]
    + config.value_loss_weight * terms["value"]
    + config.reward_loss_weight * terms["reward"]
    + config.legality_loss_weight * terms["legality"]
  )
  loss = jnp.mean(batch.weight * per_sample)
  means = {name: jnp.mean(val) for name, val in terms.items()}
  value_error = jnp.mean(jnp.abs(value_pred - t.value[:, 0]))
  return loss, (LossTerms(total=loss, value_error=value_error, **means), value_pred)


def _global_norm(tree) -> chex.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _all_finite(tree) -> chex.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def update_step(
  params,
  opt_state,
  batch: Batch,
  *,
  network: MuZeroNetwork,
  optimizer: optax.GradientTransformation,
  config: MuZeroConfig,
):
  """One guarded gradient step.

  Returns ``(params, opt_state, LossTerms, grad_norm, finite)``; when the loss or
  any gradient is not finite, ``params`` and ``opt_state`` come back unchanged
  and ``finite`` is False.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, (terms, _)), grads = grad_fn(params, batch, network=network, config=config)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  updates, new_opt_state = optimizer.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)

  def keep(new, old):
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

  return keep(new_params, params), keep(new_opt_state, opt_state), terms, _global_norm(grads), finite


def learn_step(
  params,
  opt_state,
  replay: replay_lib.Replay,
  key: chex.PRNGKey,
  *,
  network: MuZeroNetwork,
  optimizer: optax.GradientTransformation,
  config: MuZeroConfig,
):
  """Sample, reanalyse, update, refresh priorities of reanalysed positions.

  Priorities stay ``|search root value - n-step target|``: positions whose root
  values were recomputed by reanalysis get the new error; others keep theirs.

  Returns ``(params, opt_state, replay, LossTerms, grad_norm, finite)``.
  """
  key_sample, key_search = jax.random.split(key)
  num_re = config.num_reanalysed
  sample = replay_lib.sample(replay, key_sample, config=config, num_windows=num_re)
  sample = reanalyse(params, key_search, sample, network=network, config=config)
  batch = make_batch(sample, config=config)
  params, opt_state, terms, grad_norm, finite = update_step(
    params, opt_state, batch, network=network, optimizer=optimizer, config=config
  )
  if num_re > 0:
    error = sample.root_value[:num_re, 0] - batch.targets.value[:num_re, 0]
    replay = replay_lib.update_priorities(replay, sample.row[:num_re], sample.col[:num_re], error, config=config)
  return params, opt_state, replay, terms, grad_norm, finite
