"""Orbax checkpoints of the whole :class:`~muzero_jax.train.TrainState`.

Each step directory holds three items:

* ``state``: the full TrainState pytree (params, optimiser state, replay,
  actor/env states, PRNG key, counters), restored against a template state;
* ``params``: the network variables alone (for evaluation without the replay);
* ``config``: the :class:`~muzero_jax.MuZeroConfig` as JSON.

The env params pool is not saved: it is an input of training (regenerate it
from its seeds).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from muzero_jax.config import MuZeroConfig

__all__ = ["Checkpointer"]


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """A thin wrapper around ``ocp.CheckpointManager`` keeping the newest ``max_to_keep``."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "params", "config"))

    def save(self, step: int, state, *, config: MuZeroConfig | None = None, force: bool = False) -> bool:
        """Saves ``state`` (and its params and the config) at ``step``; a step already saved is skipped."""
        if step in self._manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state), "params": ocp.args.StandardSave(state.params)}
        if config is not None:
            items["config"] = ocp.args.JsonSave(config.to_dict())
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def latest_step(self) -> int | None:
        """Newest saved step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Saved steps, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, template_state, step: int | None = None):
        """The state saved at ``step`` (default newest), with the structure of ``template_state``."""
        step = self._latest_or(step)
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(template_state))))
        return out["state"]

    def restore_params(self, template_params, step: int | None = None):
        """Only the network variables saved at ``step`` (default newest)."""
        step = self._latest_or(step)
        out = self._manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(template_params))))
        return out["params"]

    def restore_config(self, step: int | None = None) -> MuZeroConfig:
        """The config saved at ``step`` (default newest)."""
        step = self._latest_or(step)
        out = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return MuZeroConfig.from_dict(out["config"])

    def wait(self) -> None:
        """Blocks until asynchronous saves have finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def _latest_or(self, step: int | None) -> int:
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return step
