"""The typed, frozen MuZero configuration.

One keyword-only dataclass holds every hyperparameter; each field carries a
docstring (read by ``tyro`` for ``--help``). Unknown fields are rejected both by
the constructor (``TypeError``) and by :meth:`MuZeroConfig.from_dict`
(``ValueError`` naming the field and the valid ones).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import jax
import numpy as np

from muzero_jax import support

__all__ = ["MuZeroConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MuZeroConfig:
  """Hyperparameters of MuZero training, search and evaluation."""

  seed: int = 0
  """Seed of the PRNG key that drives initialisation, self-play and learning."""

  # ----------------------------------------------------------------- network
  network: Literal["resnet", "mlp"] = "resnet"
  """Torso: ``resnet`` (observations ``[C, H, W]``) or ``mlp`` (any shape, flattened)."""
  channels: int = 32
  """ResNet: channels of the latent grid."""
  num_blocks: int = 2
  """ResNet: residual blocks in the representation tower."""
  dynamics_blocks: int = 1
  """ResNet: residual blocks in the dynamics tower."""
  head_channels: int = 16
  """ResNet: channels of the 1x1 convolutions in the policy/value/reward/legality heads."""
  hidden_size: int = 64
  """Width of the dense layers (MLP torso layers and value/reward head hidden layer)."""
  mlp_layers: int = 2
  """MLP: dense layers in the representation and dynamics torsos."""
  latent_size: int = 64
  """MLP: size of the latent state vector."""
  policy_head: Literal["auto", "conv", "dense"] = "auto"
  """``conv``: fully convolutional logits (needs num_actions == H*W); ``dense``: a
    linear layer; ``auto``: conv when possible, else dense."""
  conv_gradient: Literal["auto", "patch", "lax"] = "auto"
  """How the ResNet's convolutions are differentiated (their outputs are XLA's convolution
    either way): ``patch``, as the same convolution written as shifted slices and one
    matrix product, whose gradient stays fast inside the learner's loops on XLA:CPU;
    ``lax``, XLA's own convolution gradient (7-10x slower there, faster at top level);
    ``auto``, ``patch`` where the updates run inside a loop on a CPU (``learner_loop``
    ``scan``, and the Ray fan-out's rounds), ``lax`` elsewhere (accelerators: not
    measured there)."""

  # ----------------------------------------------------------------- support
  support_size: int = 20
  """Value support is the integers ``[-S, S]`` after the transform h."""
  reward_support_size: int = 10
  """Reward support is the integers ``[-S_r, S_r]`` after the transform h."""
  value_transform_eps: float = 0.001
  """The ``eps`` of ``h(x) = sign(x)(sqrt(|x|+1)-1) + eps x``."""
  max_reward: float = 10.0
  """Largest absolute reward of one step; checked against the supports at start-up."""
  max_episode_steps: int = 32
  """Episode horizon (steps): the longest episode. Used by the support check and as the evaluation length;
  self-play warns once a run when an episode runs past it."""
  discount: float = 0.997
  """Discount of rewards, used in search and in n-step targets."""

  # ------------------------------------------------------------------ search
  search: Literal["gumbel", "muzero"] = "gumbel"
  """``gumbel``: ``mctx.gumbel_muzero_policy``; ``muzero``: ``mctx.muzero_policy`` (PUCT)."""
  num_simulations: int = 20
  """Simulations (recurrent model calls) per search."""
  max_num_considered_actions: int = 16
  """Gumbel: actions considered at the root by sequential halving."""
  gumbel_scale: float = 1.0
  """Gumbel: scale of the root Gumbel noise while training (evaluation uses 0)."""
  dirichlet_alpha: float = 0.3
  """PUCT: Dirichlet concentration of root exploration noise."""
  dirichlet_fraction: float = 0.25
  """PUCT: weight of the Dirichlet noise at the root while training (evaluation uses 0)."""
  pb_c_init: float = 1.25
  """PUCT: exploration constant c1."""
  pb_c_base: float = 19652.0
  """PUCT: exploration constant c2."""
  temperature: float = 1.0
  """PUCT: acting temperature on visit counts while training (evaluation uses 0)."""
  legality_threshold: float = 0.5
  """Inside the tree, actions whose predicted legality probability is below this get
    prior logit ``-1e9`` (mctx masks illegal actions only at the root)."""

  # --------------------------------------------------------------- self-play
  num_envs: int = 16
  """Environments stepped together in self-play (the batch of the actor)."""
  rollout_length: int = 16
  """Self-play steps per environment per training iteration."""

  imitation_iterations: int = 0
  """Warm start: the first iterations' self-play follows the environment's expert
    (``env.expert_logits``) and learns its softmax as the policy target (0: off;
    see :mod:`muzero_jax.selfplay`)."""
  imitation_temperature: float = 1.0
  """Temperature of the expert's softmax over the legal actions, in the units of its logits."""
  expert_prior: float = 0.0
  """Weight of the environment's expert inside the search (0: off): at the root the prior logits become
    the network's plus ``expert_prior`` x the log of the expert's softmax (``imitation_temperature``) over
    the legal actions, so the search starts from the expert's preference and its value estimates refine it.
    Applied where the environment's state is at hand (self-play, ``evaluate``); reanalysis holds only
    observations and searches without it."""
  # ------------------------------------------------------------------ replay
  replay_capacity: int = 16384
  """Positions kept in the ring buffer (rounded down to a multiple of num_envs)."""
  min_replay_size: int = 256
  """Sampleable positions needed before the learner starts updating."""
  n_step: int = 5
  """Steps of real reward before bootstrapping from a search value in value targets."""
  unroll_steps: int = 5
  """K: steps the learner unrolls the dynamics model."""
  priority_alpha: float = 0.6
  """Prioritised replay exponent: P(i) ~ p_i^alpha (0 = uniform; Schaul et al. 2016 use 0.6)."""
  priority_beta: float = 0.4
  """Importance-weight exponent: w_i ~ (N P(i))^-beta (0 = no correction, 1 = full)."""
  priority_eps: float = 1e-3
  """Added to |value error| so no position has zero priority."""
  reanalyse_fraction: float = 0.25
  """Fraction of each sampled batch whose policy and value targets are recomputed by
    a fresh search with the current parameters (MuZero Reanalyze)."""

  # ----------------------------------------------------------------- learner
  batch_size: int = 64
  """Positions per gradient update."""
  updates_per_iteration: int = 4
  """Gradient updates per training iteration (after each rollout)."""
  learning_rate: float = 3e-3
  """Peak learning rate."""
  warmup_steps: int = 100
  """Linear warm-up updates from 0 to the peak learning rate."""
  decay_steps: int = 20000
  """Updates of cosine decay after warm-up (then constant at the final rate)."""
  final_lr_fraction: float = 0.1
  """Final learning rate as a fraction of the peak."""
  weight_decay: float = 1e-4
  """AdamW decoupled weight decay (0 gives Adam)."""
  max_grad_norm: float = 5.0
  """Global gradient-norm clip."""
  policy_loss_weight: float = 1.0
  """Weight of the policy cross-entropy."""
  value_loss_weight: float = 0.25
  """Weight of the value cross-entropy (MuZero Reanalyze uses 0.25)."""
  reward_loss_weight: float = 1.0
  """Weight of the reward cross-entropy."""
  legality_loss_weight: float = 1.0
  """Weight of the legality binary cross-entropy."""
  dynamics_gradient_scale: float = 0.5
  """Gradient scale at the dynamics input (MuZero: 1/2)."""
  learner_loop: Literal["auto", "scan", "host", "overlap"] = "auto"
  """How ``make_train``'s iteration runs its updates. ``scan``: one compiled program an
    iteration (self-play, replay insertion, then the updates in a ``lax.scan``). ``host``:
    self-play, the insertion and each update compiled apart and called in that order from
    the host: the same steps (rounding aside), and on XLA:CPU an update's convolution
    gradients then run at top level, several times faster than inside a loop (XLA's own
    gradient, ``conv_gradient="auto"``). ``overlap``: as ``host``, but the updates run while
    self-play plays, in a second host thread, on the replay as it was before this
    iteration's moves (added once both finish): the learner lags the actors by one
    iteration, as in distributed MuZero, and a second CPU core works. ``auto``: ``host`` on
    a CPU, ``scan`` on accelerators (one program, no host round trips). The Ray fan-out's
    learner rounds (:mod:`muzero_jax.distributed`) always scan."""

  # ---------------------------------------------------- checkpoints, logging
  checkpoint_every: int = 50
  """Iterations between checkpoints in ``train`` (when a checkpoint directory is given)."""
  checkpoints_to_keep: int = 3
  """Most recent checkpoints kept on disk."""

  def __post_init__(self) -> None:
    for field in dataclasses.fields(self):  # a typo'd type fails here, naming the field, not deep inside jit
      value = getattr(self, field.name)
      if field.type == "int" and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
        raise ValueError(f"MuZeroConfig.{field.name} must be a whole number, got {value!r}")
      if field.type == "float" and (isinstance(value, bool) or not isinstance(value, int | float | np.number)):
        raise ValueError(f"MuZeroConfig.{field.name} must be a number, got {value!r}")
      if field.type in ("int", "float") and isinstance(value, np.generic):  # Python numbers, as JSON writes them
        object.__setattr__(self, field.name, value.item())
    if not 0 <= self.seed < 2**32:  # jax.random.PRNGKey keeps the low 32 bits: 2**32 trained as seed 0 (an audit)
      raise ValueError(f"MuZeroConfig.seed must be a whole number from 0 to 2**32 - 1, got {self.seed}")
    for name in ("learning_rate", "max_grad_norm", "max_reward", "pb_c_init", "pb_c_base", "priority_eps"):
      if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
        raise ValueError(f"MuZeroConfig.{name} must be a finite number > 0, got {getattr(self, name)}")
    # The muzero search's Dirichlet noise: alpha 0 draws NaN (jax.random.dirichlet), and a NaN prior makes every
    # search pick action 0; the gumbel search draws none, so a saved gumbel config with 0 still loads.
    if self.search == "muzero" and not (math.isfinite(self.dirichlet_alpha) and self.dirichlet_alpha > 0):
      raise ValueError(
        f"MuZeroConfig.dirichlet_alpha must be a finite number > 0 with search='muzero', got {self.dirichlet_alpha}"
      )
    non_negative = (
      "temperature",  # 0: mctx's greedy action
      "weight_decay",
      "gumbel_scale",
      "dirichlet_alpha",
      "policy_loss_weight",
      "value_loss_weight",
      "reward_loss_weight",
      "legality_loss_weight",
      "expert_prior",
      "value_transform_eps",
      "priority_alpha",
    )
    for name in non_negative:
      if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
        raise ValueError(f"MuZeroConfig.{name} must be a finite number >= 0, got {getattr(self, name)}")
    positive = [
      "channels",
      "num_blocks",
      "head_channels",
      "hidden_size",
      "mlp_layers",
      "latent_size",
      "support_size",
      "reward_support_size",
      "max_episode_steps",
      "num_simulations",
      "max_num_considered_actions",
      "num_envs",
      "rollout_length",
      "replay_capacity",
      "n_step",
      "unroll_steps",
      "batch_size",
      "updates_per_iteration",
      "decay_steps",
      "checkpoint_every",
      "checkpoints_to_keep",
    ]
    for name in positive:
      if getattr(self, name) <= 0:
        raise ValueError(f"MuZeroConfig.{name} must be > 0, got {getattr(self, name)}")
    if not self.imitation_temperature > 0:
      raise ValueError(f"MuZeroConfig.imitation_temperature must be > 0, got {self.imitation_temperature}")
    for name in ("dynamics_blocks", "warmup_steps", "min_replay_size", "imitation_iterations"):
      if getattr(self, name) < 0:
        raise ValueError(f"MuZeroConfig.{name} must be >= 0, got {getattr(self, name)}")
    unit = (
      "discount",
      "reanalyse_fraction",
      "dirichlet_fraction",
      "legality_threshold",
      "final_lr_fraction",
      "dynamics_gradient_scale",
      "priority_beta",
    )
    for name in unit:
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"MuZeroConfig.{name} must be in [0, 1], got {getattr(self, name)}")
    choices = {
      "network": ("resnet", "mlp"),
      "policy_head": ("auto", "conv", "dense"),
      "conv_gradient": ("auto", "patch", "lax"),
      "learner_loop": ("auto", "scan", "host", "overlap"),
      "search": ("gumbel", "muzero"),
    }
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"MuZeroConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
    if self.replay_rows < self.rollout_length + self.window_length:
      raise ValueError(
        f"replay_capacity={self.replay_capacity} holds {self.replay_rows} steps per "
        f"environment; need at least rollout_length + unroll_steps + n_step + 1 = "
        f"{self.rollout_length + self.window_length} per environment: replay_capacity >= "
        f"{self.rollout_length + self.window_length} x num_envs ({self.num_envs}) = "
        f"{(self.rollout_length + self.window_length) * self.num_envs}"
      )

  # ----------------------------------------------------------- derived sizes
  def resolved_learner_loop(self) -> str:
    """``learner_loop`` with ``auto`` resolved for the default backend: ``host`` on a CPU, else ``scan``."""
    if self.learner_loop == "auto":
      return "host" if jax.default_backend() == "cpu" else "scan"
    return self.learner_loop

  @property
  def replay_rows(self) -> int:
    """Time steps stored per environment slot: ``replay_capacity // num_envs``."""
    return self.replay_capacity // self.num_envs

  @property
  def window_length(self) -> int:
    """Rows one sampled position reads: ``unroll_steps + n_step + 1``."""
    return self.unroll_steps + self.n_step + 1

  @property
  def num_reanalysed(self) -> int:
    """Sampled positions per update whose targets are recomputed by search."""
    return int(round(self.reanalyse_fraction * self.batch_size))

  @property
  def max_return(self) -> float:
    """Largest absolute discounted return of an episode: ``max_reward * sum_t discount^t``."""
    return self.max_reward * sum(self.discount**t for t in range(self.max_episode_steps))

  def check_supports(self) -> None:
    """Raises ``ValueError`` when the value or reward support cannot hold the env's scale, or when the replay can
    never hold ``min_replay_size`` steps (no update would ever run); ``make_train`` calls it."""
    if self.min_replay_size > self.replay_rows * self.num_envs:
      raise ValueError(
        f"MuZeroConfig.min_replay_size={self.min_replay_size} is more than the replay holds "
        f"({self.replay_rows * self.num_envs} steps: replay_capacity // num_envs x num_envs): no update would ever run"
      )
    support.check_support(
      self.support_size,
      self.max_return,
      eps=self.value_transform_eps,
      what="episode return (value)",
      declared_by=f"max_reward ({self.max_reward:g}) or max_episode_steps ({self.max_episode_steps}; "
      f"the return's bound is max_reward x the sum of discount^t over the steps)",
    )
    support.check_support(
      self.reward_support_size,
      self.max_reward,
      eps=self.value_transform_eps,
      what="one-step reward",
      size_field="reward_support_size",
      declared_by=f"max_reward ({self.max_reward:g})",
    )

  # ------------------------------------------------------------ construction
  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> MuZeroConfig:
    """Builds a config from a mapping, rejecting unknown keys with ``ValueError``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"Unknown MuZeroConfig field(s) {unknown}; valid fields: {sorted(known)}")
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    """Plain dict of all fields (JSON-serialisable)."""
    return dataclasses.asdict(self)

  def replace(self, **changes: Any) -> MuZeroConfig:
    """Copy with some fields changed; unknown names raise ``ValueError``."""
    return self.from_dict({**self.to_dict(), **changes})
