"""The command-line tools' persistent compilation cache (`experiments.launch.compile_cache`)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.launch import compile_cache

# A program compiles before `enable` (as an import might), then one after: neither may stop the cache. Then the
# same process names a directory of its own (argv[1]) and compiles another program there.
PROGRAM = """
import os, sys, jax, jax.numpy as jnp
jnp.zeros(3).block_until_ready()
from experiments.launch import compile_cache
print(compile_cache.enable(), os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.jit(lambda x: x * 2.0 + 1.0)(jnp.arange(5.0)).block_until_ready()
os.environ[compile_cache.ENV_VAR] = sys.argv[1]
print(compile_cache.enable(), os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.jit(lambda x: x * 3.0 - 1.0)(jnp.arange(5.0)).block_until_ready()
"""


def test_default_then_named_directory_is_filled(tmp_path, monkeypatch):
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", compile_cache.ENV_VAR)}
  env |= {"JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "XDG_CACHE_HOME": str(tmp_path)}
  mine = tmp_path / "mine"
  out = subprocess.run([sys.executable, "-c", PROGRAM, str(mine)], env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  default = tmp_path / "cube-muzero" / "jax"
  # this process's cache, and what its children inherit
  assert out.stdout.split() == [str(default), str(default), str(mine), str(mine)]
  for cache in (default, mine):
    stored = [p.name for p in cache.iterdir()]
    assert sum(name.startswith("jit__lambda") and name.endswith("-cache") for name in stored) == 1, stored
  # Without XDG_CACHE_HOME: under the home directory.
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compile_cache.default_dir() == tmp_path / "home" / ".cache" / "cube-muzero" / "jax"


def test_off_jax_own_variable_and_an_unusable_directory_leave_jax_alone(tmp_path, monkeypatch, capsys):
  config_dir = jax.config.jax_compilation_cache_dir  # the test suite's cache: none of these calls may move it
  monkeypatch.setenv(compile_cache.ENV_VAR, "off")
  assert compile_cache.enable() is None
  monkeypatch.delenv(compile_cache.ENV_VAR)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
  assert compile_cache.enable() == str(tmp_path / "theirs")  # as set, e.g. the test suite's own cache
  (tmp_path / "a_file").write_text("")
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "a_file" / "cache"))
  assert compile_cache.enable() is None
  err = capsys.readouterr().err
  assert "no compilation cache" in err and compile_cache.ENV_VAR in err
  assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "theirs")  # not rewritten (monkeypatch restores)
  assert jax.config.jax_compilation_cache_dir == config_dir


# 40 programs of distinct shapes in a fresh process: the mappings each holds, and what release_if_crowded gives back.
CROWDING = """
import json, jax, jax.numpy as jnp
from experiments.launch import compile_cache
f = jax.jit(lambda x: jnp.sin(x) * 2.0 + jnp.cumsum(x))
f(jnp.ones(41)).block_until_ready()  # XLA's threads and arenas start here, and stay
jax.clear_caches()
before = compile_cache.mapped_share()
for n in range(1, 41):
  f(jnp.ones(n)).block_until_ready()
compiled = compile_cache.mapped_share()
kept = compile_cache.release_if_crowded(share=1.0), f._cache_size()
released = compile_cache.release_if_crowded(share=compiled * 0.99), f._cache_size(), compile_cache.mapped_share()
again = float(f(jnp.ones(3))[1])
print(json.dumps([before, compiled, kept, released, again]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux's /proc tells the mappings")
def test_compiled_programs_hold_mappings_until_released_when_crowded():
  """The test suite's workers died of a segmentation fault once JAX's compiled programs held Linux's 65,530 memory
  mappings (60,000 seen near the end of a run): `release_if_crowded` drops them past a share of the limit."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(
    [sys.executable, "-c", CROWDING], env=env, capture_output=True, text=True, timeout=300, check=False
  )
  assert out.returncode == 0, out.stderr
  before, compiled, kept, released, again = json.loads(out.stdout.splitlines()[-1])
  with open("/proc/sys/vm/max_map_count") as f:
    limit = int(f.read())
  assert (compiled - before) * limit >= 40 * 5  # each program holds several mappings (15-20 on XLA:CPU)
  assert kept == [False, 40]  # under the share: nothing dropped
  assert released[:2] == [True, 0]
  assert (compiled - released[2]) >= 0.8 * (compiled - before)  # most of what compiling took is given back
  assert again == pytest.approx(np.sin(1.0) * 2.0 + 2.0, rel=1e-6)  # the function compiles again and still works


def test_mapped_share_without_proc_is_none_and_releases_nothing(monkeypatch):
  def no_proc(path, *_, **__):
    raise FileNotFoundError(path)

  monkeypatch.setattr(compile_cache, "open", no_proc, raising=False)
  assert compile_cache.mapped_share() is None
  assert compile_cache.release_if_crowded(share=0.0) is False
