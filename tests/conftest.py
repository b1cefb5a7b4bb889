"""Shared fixtures: small cubes built once per session (JAX compiles once).

Compiled programs are shared too: the run's first process makes a temporary
JAX persistent compilation cache and hands its path to the xdist workers and
to every subprocess a test starts (through the environment), so a function
compiled by one test file or CLI run is loaded, not recompiled, by the others.
The controller removes it at the end.
"""

import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cube-muzero-jax-cache-")
  os.environ["CUBE_MUZERO_TEST_CACHE_OWNER"] = str(os.getpid())
# Cache every compilation that takes a noticeable time (the default, 1 s, misses most of ours).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Most of the suite's time is XLA:CPU compiling the tests' programs, not running them; this flag cuts it
# (benchmarks/README.md, *Where the test suite's time goes*). Tests only: what users run keeps XLA's defaults. An
# XLA that does not know a flag aborts the process, so the run's first process tries it in a child first and, if
# that child fails, says so and leaves XLA_FLAGS alone.
FAST_COMPILE_FLAGS = "--xla_llvm_disable_expensive_passes=true"
if "CUBE_MUZERO_TEST_XLA_FLAGS" not in os.environ:
  _flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip()
  try:
    _probe = subprocess.run(
      [sys.executable, "-c", "import jax, jax.numpy as jnp; jax.jit(lambda x: x + 1)(jnp.ones(2)).block_until_ready()"],
      env={**os.environ, "XLA_FLAGS": _flags},
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
    )
    _failed = _probe.returncode != 0 and (_probe.stderr[-300:] or f"the child exited {_probe.returncode}")
  except subprocess.TimeoutExpired:
    _failed = "the child timed out"
  if _failed:
    print(f"conftest: XLA refused {FAST_COMPILE_FLAGS} (left out): {_failed}", file=sys.stderr)
  os.environ["CUBE_MUZERO_TEST_XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") if _failed else _flags
os.environ["XLA_FLAGS"] = os.environ["CUBE_MUZERO_TEST_XLA_FLAGS"]

import numpy as np
import pandas as pd
import pytest

import cube_env
from experiments.launch import compile_cache


def override_flags(argv: list[str], extra: list[str]) -> list[str]:
  """`argv` with the flags `extra` gives replaced by `extra`'s (a flag given twice is refused: `--budget 5` over
  `--budget 40` is that flag and its values taken out, then `extra` added)."""
  given = {token for token in extra if token.startswith("--")}
  out, skipping = [], False
  for token in argv:
    if token.startswith("--"):
      skipping = token in given
    if not skipping:
      out.append(token)
  return out + extra


def make_small_df(seed: int = 0, n: int = 4000) -> pd.DataFrame:
  """A small hand-made case table: one planted gap (race B, minutes, proc A), missing values."""
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      "proc": rng.choice(list("ABCDE"), n, p=[0.3, 0.25, 0.2, 0.15, 0.1]),
      "site": rng.choice(["s1", "s2", "s3"], n),
      "urgency": rng.choice(["elective", "urgent"], n, p=[0.7, 0.3]),
      "bmi": rng.normal(28, 5, n),  # numeric dimension: binned
      "race": rng.choice(["W", "B", "A"], n, p=[0.6, 0.25, 0.15]),
      "sex": rng.choice(["F", "M"], n),
      "minutes": rng.lognormal(4, 0.5, n),
      "los": rng.gamma(2.0, 1.5, n) + 0.1,
      "complication": (rng.random(n) < 0.12).astype(float),
    }
  )
  df.loc[(df.proc == "A") & (df.race == "B"), "minutes"] *= 1.5
  df.loc[rng.random(n) < 0.03, "site"] = None
  df.loc[rng.random(n) < 0.05, "los"] = np.nan
  return df


SMALL_SCHEMA = cube_env.Schema(
  dimensions=["proc", "site", "urgency", "bmi"], protected=["race", "sex"], measures=["minutes", "los", "complication"]
)


@pytest.fixture(scope="session")
def small_df():
  return make_small_df()


@pytest.fixture(scope="session")
def small_cube(small_df):
  return cube_env.build_cube(small_df, SMALL_SCHEMA, n_bins=3)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
  """A worker runs hundreds of tests in one process, and JAX keeps every program it compiled: its memory mappings
  reached 60,000 of Linux's 65,530, past which the next compilation dies of a segmentation fault (seen twice, then a
  hung run). They are dropped once the worker holds half (`compile_cache.release_if_crowded`), after the test's
  fixtures are torn down (trylast: pytest's own teardown runs first)."""
  del item, nextitem
  compile_cache.release_if_crowded()


def pytest_sessionfinish(session):
  """The process that made the compilation cache removes it (xdist workers leave it alone)."""
  del session
  if os.environ.get("CUBE_MUZERO_TEST_CACHE_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
