"""A persistent JAX compilation cache for the command-line entry points.

On a CPU, compiling what a table needs takes seconds per program (the
environment's step and the cohort tests about 7-9 s each for a 10,000-row
world, benchmarks/README): a third to a half of a benchmark sweep's wall time, and
most of a short `discover` run. JAX can keep compiled programs on disk, keyed
by the program, its shapes, the flags and the device, so a second run on a
table of the same shape (the same table again, a resumed run, a sweep rerun
on the same worlds) loads them instead. Every `python -m experiments.<tool>`
turns it on before it compiles anything (`enable`, called from `__main__`
only: importing a module or calling its `main()` changes no global setting).

Where, first match wins:
- `CUBE_MUZERO_COMPILE_CACHE`: a directory, or `off` for no cache;
- `JAX_COMPILATION_CACHE_DIR` (JAX's own variable; the test suite sets it to
  a temporary directory): left to JAX as it is;
- `$XDG_CACHE_HOME/cube-muzero/jax` (default `~/.cache/cube-muzero/jax`).

The directory is capped at `MAX_BYTES` (JAX evicts the least recently used
programs; it needs `filelock`). Programs that compiled in under
`MIN_COMPILE_SECONDS` are not stored (loading them would save little). The
chosen directory goes into the environment too, so the processes a tool
starts (Ray's self-play actors, the service's job processes) share it.

In memory, JAX keeps every program a process compiled until `jax.clear_caches()`,
and on a CPU each holds 15-20 memory mappings (its code and data). Linux caps a
process's mappings (`vm.max_map_count`, 65,530 by default); past it LLVM cannot map
the next program ("LLVM compilation error: Cannot allocate memory") and the
process dies of a segmentation fault (the test suite's workers reached 60,000; a
process that maps the rest itself dies so at its next compile). A process that
compiles programs for many shapes (a sweep over worlds, a tuning, the test suite)
calls `release_if_crowded` between them. Programs a caller holds itself (an AOT
`Compiled`) stay.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV_VAR = "CUBE_MUZERO_COMPILE_CACHE"
CROWDED_SHARE = 0.5
MAX_BYTES = 2 * 1024**3
MIN_COMPILE_SECONDS = 0.5


def default_dir() -> Path:
  """`$XDG_CACHE_HOME/cube-muzero/jax`, or `~/.cache/cube-muzero/jax`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "cube-muzero" / "jax"


def enable() -> str | None:
  """Turns the persistent cache on for this process and its children; returns its directory (None: off).

  A directory that cannot be created leaves the cache off, with a warning on stderr: a tool never fails for it.
  """
  chosen = os.environ.get(ENV_VAR, "").strip()
  if chosen.lower() == "off":
    return None
  if not chosen and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]  # JAX read it at import; whoever set it chose its limits
  path = Path(chosen).expanduser() if chosen else default_dir()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    print(f"warning: no compilation cache ({ENV_VAR}={path}: {err})", file=sys.stderr)
    return None
  # Written to the environment so that child processes read the same settings (for the two limits, a value the user
  # already set there wins).
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
  min_seconds = os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_seconds))
  if importlib.util.find_spec("filelock") is None:  # a declared dependency; an image without it runs uncapped
    print(f"warning: filelock is not installed: the compilation cache in {path} has no size cap", file=sys.stderr)
  else:
    max_bytes = os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
  compilation_cache.reset_cache()  # a program compiled while importing would have fixed the cache as off
  return str(path)


def mapped_share() -> float | None:
  """The share of the memory mappings Linux allows a process (`vm.max_map_count`) that this one holds now; None
  where /proc does not say (not Linux)."""
  try:
    with open("/proc/sys/vm/max_map_count", "rb") as f:
      limit = int(f.read())
    with open("/proc/self/maps", "rb") as f:
      used = f.read().count(b"\n")
  except (OSError, ValueError):
    return None
  return used / limit if limit > 0 else None


def release_if_crowded(share: float = CROWDED_SHARE) -> bool:
  """Drops every compiled program JAX holds in memory (`jax.clear_caches()`; the next call of a function compiles
  it again, or loads it from the persistent cache) once this process holds more than `share` of the memory mappings
  Linux allows it; True where it did. The module docstring says why."""
  used = mapped_share()
  if used is None or used <= share:
    return False
  jax.clear_caches()
  return True
