"""How a batch of environments runs a step: in chunks of environments, not all at once.

`jax.vmap(env.step)` would batch the whole group-by and statistics over the
batch: every intermediate (a chunk of cells' updates, the pixel grid, the
tests of every pixel) is then held for every environment at once, and on a
CPU the batched scatter costs twice the unbatched one per addition
(benchmarks/README). `map_when_batched(fn, chunk)` returns `fn` with a vmap
rule that runs it over the batch with `jax.lax.map`, `chunk` environments at a
time (vmapped within a chunk): peak memory is the batch's inputs and outputs
plus `chunk` environments' working set, whatever the batch size, and a CPU
(chunk 1) steps each environment at its unbatched speed.

Limits: under nested `vmap` only the innermost batch axis is chunked (the
outer one runs whole inside each chunk); a `custom_vmap` function cannot be
differentiated (nothing here differentiates the environment); and when the
caller batches the params too (`muzero_jax.selfplay` gathers one cube per
environment), that copy of the cube per environment is the caller's memory,
outside `CubeEnv.step_memory_bound`, which is for params shared by the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax


def default_chunk() -> int:
  """Environments per chunk: 1 on a CPU (unbatched code is fastest there), 64 on accelerators."""
  return 1 if jax.default_backend() == "cpu" else 64


def map_when_batched(fn: Callable, chunk: int) -> Callable:
  """`fn`, which under `vmap` runs as `lax.map` over chunks of `chunk` batch elements.

  Arguments batched by the caller are mapped over; unbatched ones (e.g. one
  cube's params shared by every environment) are closed over, not copied.
  Every output is batched.
  """
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, *args):
    leaves, tree = jax.tree.flatten(args)
    flags = jax.tree.leaves(in_batched)
    mapped = [x for x, b in zip(leaves, flags) if b]

    def one(xs):
      it = iter(xs)
      full = [next(it) if b else x for x, b in zip(leaves, flags)]
      return fn(*jax.tree.unflatten(tree, full))

    out = jax.lax.map(one, mapped, batch_size=min(chunk, axis_size) if chunk > 1 else None)
    return out, jax.tree.map(lambda _: True, out)

  return wrapped


def tree_bytes(tree) -> int:
  """Bytes of every array in a pytree (shapes and dtypes only; works on `jax.eval_shape` results)."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))
