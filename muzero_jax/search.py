"""The mctx wiring: root and recurrent functions from the network, and one search call.

``mctx`` masks illegal actions only at the root (``invalid_actions``). Below the
root the learned model must do it: :func:`make_recurrent_fn` pushes the prior
logit of every action whose predicted legality probability is below
``config.legality_threshold`` to ``ILLEGAL_LOGIT``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import mctx

from muzero_jax import support
from muzero_jax.config import MuZeroConfig
from muzero_jax.networks import MuZeroNetwork

__all__ = [
  "BACKUPS",
  "ILLEGAL_LOGIT",
  "SearchOutput",
  "max_backup_qvalues",
  "root_output",
  "make_recurrent_fn",
  "run_search",
]

BACKUPS = ("mean", "max")

ILLEGAL_LOGIT = -1e9
"""Prior logit of predicted-illegal actions inside the tree (finite: keeps softmax NaN-free)."""


@chex.dataclass(frozen=True)
class SearchOutput:
  """Result of a batched search."""

  action: chex.Array  # [B] int32, the action to play
  action_weights: chex.Array  # [B, A] search policy (policy target), zero on illegal actions
  root_value: chex.Array  # [B] search value of the root (value-target bootstrap)
  network_value: chex.Array  # [B] the network's value of the root before search
  action_values: chex.Array  # [B, A] each action's search Q where the search visited it, else network_value
  # (Q: mctx's mean backup, or with backup="max" the best path below the action: `max_backup_qvalues`)


def _mask_logits(logits: chex.Array, legal: chex.Array) -> chex.Array:
  return jnp.where(legal, logits, ILLEGAL_LOGIT)


def root_output(network: MuZeroNetwork, config: MuZeroConfig, params, obs: chex.Array) -> mctx.RootFnOutput:
  """Initial inference ``[B, *obs]`` -> ``mctx.RootFnOutput`` (prior logits, value, latent)."""
  latent = network.apply(params, obs, method="represent")
  policy_logits, value_logits, _ = network.apply(params, latent, method="predict")
  value = support.logits_to_scalar(value_logits, config.support_size, config.value_transform_eps)
  return mctx.RootFnOutput(prior_logits=policy_logits, value=value, embedding=latent)


def make_recurrent_fn(network: MuZeroNetwork, config: MuZeroConfig) -> mctx.RecurrentFn:
  """``recurrent_fn(params, key, action [B], latent [B, ...])`` for mctx."""

  def recurrent_fn(params, rng_key, action, latent):
    del rng_key  # the model is deterministic
    next_latent, reward_logits = network.apply(params, latent, action, method="dynamics")
    policy_logits, value_logits, legal_logits = network.apply(params, next_latent, method="predict")
    legal = jax.nn.sigmoid(legal_logits) >= config.legality_threshold
    reward = support.logits_to_scalar(reward_logits, config.reward_support_size, config.value_transform_eps)
    value = support.logits_to_scalar(value_logits, config.support_size, config.value_transform_eps)
    out = mctx.RecurrentFnOutput(
      reward=reward,
      discount=jnp.full_like(reward, config.discount),
      prior_logits=_mask_logits(policy_logits, legal),
      value=value,
    )
    return out, next_latent

  return recurrent_fn


def max_backup_qvalues(tree: mctx.Tree) -> chex.Array:
  """``[B, A]`` the root actions' values under a max backup of the searched tree (mctx backs up means).

  A node's max value is the best of its network value and, over its expanded
  children, reward plus discount times the child's max value: the best path the
  search found below it, for a task where one good outcome is what counts. Read
  off the finished tree (the search itself selects by mctx's mean values);
  nodes are numbered in creation order, so children come after their parents
  and one reverse pass suffices. Unexpanded root actions get 0 (mask them).
  """
  num_nodes = tree.node_values.shape[1]

  def q_of(best, node):  # [B, A] reward + discount x best value of node's expanded children (else -inf)
    child = tree.children_index[:, node]
    below = jnp.take_along_axis(best, jnp.maximum(child, 0), axis=1)
    q = tree.children_rewards[:, node] + tree.children_discounts[:, node] * below
    return jnp.where(child >= 0, q, -jnp.inf)

  def body(i, best):
    node = num_nodes - 1 - i
    value = jnp.maximum(tree.raw_values[:, node], jnp.max(q_of(best, node), axis=-1))
    return best.at[:, node].set(value)

  best = jax.lax.fori_loop(0, num_nodes, body, tree.raw_values)
  q = q_of(best, tree.ROOT_INDEX)
  return jnp.where(jnp.isfinite(q), q, 0.0)


def run_search(
  params,
  key: chex.PRNGKey,
  obs: chex.Array,
  mask: chex.Array,
  *,
  network: MuZeroNetwork,
  config: MuZeroConfig,
  greedy: bool = False,
  backup: str = "mean",
  root_bias: chex.Array | None = None,
) -> SearchOutput:
  """Runs the configured mctx search on a batch of observations.

  Args:
    params: network variables.
    key: PRNG key (consumed).
    obs: ``[B, *observation_shape]`` observations.
    mask: ``[B, A]`` bool, True = legal. A row with no legal action is searched
      as if every action were legal (the environment decides what happens).
    network: the :class:`MuZeroNetwork`.
    config: hyperparameters (search kind, simulations, noise, temperature).
    greedy: evaluation mode: no Gumbel/Dirichlet noise, temperature 0.
    backup: how ``action_values`` reads the tree: "mean" (mctx's Q) or "max"
      (:func:`max_backup_qvalues`); acting and the policy are mctx's either way.
    root_bias: optional ``[B, A]`` added to the root's prior logits (an expert's
      preference, ``MuZeroConfig.expert_prior``); finite everywhere.

  Returns:
    :class:`SearchOutput` with ``[B]`` actions and values and ``[B, A]`` weights.
  """
  if backup not in BACKUPS:
    raise ValueError(f"backup must be one of {BACKUPS}, got {backup!r}")
  batch, num_actions = mask.shape
  chex.assert_shape(obs, (batch, *network.observation_shape))
  invalid = jnp.logical_not(mask)
  invalid = jnp.where(jnp.all(invalid, axis=-1, keepdims=True), False, invalid)
  root = root_output(network, config, params, obs)
  chex.assert_shape(root.prior_logits, (batch, num_actions))
  if root_bias is not None:
    chex.assert_shape(root_bias, (batch, num_actions))
    root = root.replace(prior_logits=root.prior_logits + root_bias)
  recurrent_fn = make_recurrent_fn(network, config)
  if config.search == "gumbel":
    out = mctx.gumbel_muzero_policy(
      params,
      key,
      root,
      recurrent_fn,
      num_simulations=config.num_simulations,
      invalid_actions=invalid,
      max_num_considered_actions=min(config.max_num_considered_actions, num_actions),
      gumbel_scale=0.0 if greedy else config.gumbel_scale,
    )
  else:
    out = mctx.muzero_policy(
      params,
      key,
      root,
      recurrent_fn,
      num_simulations=config.num_simulations,
      invalid_actions=invalid,
      dirichlet_fraction=0.0 if greedy else config.dirichlet_fraction,
      dirichlet_alpha=config.dirichlet_alpha,
      pb_c_init=config.pb_c_init,
      pb_c_base=config.pb_c_base,
      temperature=0.0 if greedy else config.temperature,
    )
  summary = out.search_tree.summary()
  visited = summary.visit_counts > 0
  qvalues = summary.qvalues if backup == "mean" else max_backup_qvalues(out.search_tree)
  return SearchOutput(
    action=out.action.astype(jnp.int32),
    action_weights=out.action_weights,
    root_value=summary.value,
    network_value=root.value,
    action_values=jnp.where(visited, qvalues, root.value[:, None]),
  )
