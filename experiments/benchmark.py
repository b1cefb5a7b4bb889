"""Benchmarks: `python -m experiments.benchmark {env,search,selfplay}`.

Each prints machine-readable JSON lines (one per measurement) to stdout and,
with `--out FILE`, appends them to FILE. Speed targets live here, not in
tests.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Iterable

import tyro


def _emit(rows: Iterable[dict], out: str | None) -> list[dict]:
  done = []
  handle = open(out, "a") if out else None
  try:
    for row in rows:
      line = json.dumps(row, sort_keys=True)
      print(line, flush=True)
      if handle:
        handle.write(line + "\n")
      done.append(row)
  finally:
    if handle:
      handle.close()
  return done


@dataclasses.dataclass(frozen=True)
class Env:
  """Environment steps/s against cube cells and batch, with the bandwidth bound."""

  cells: tuple[int, ...] = (1_000, 10_000, 100_000, 200_000)
  batches: tuple[int, ...] = (1, 64, 1024)
  methods: tuple[str, ...] = ("segment", "matmul")
  max_work: float = 3e6
  """Skip configurations with cells x batch above this (use 1e12 on a GPU)."""
  out: str | None = None


def run_env(args: Env) -> list[dict]:
  from experiments import bench_env
  rows = _emit(bench_env.bench_env(args.cells, args.batches, args.methods, args.max_work), args.out)
  return rows + _emit(bench_env.linearity(rows), args.out)


COMMANDS = {"env": (Env, run_env)}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    print(f"usage: python -m experiments.benchmark {{{','.join(COMMANDS)}}} [--help]", file=sys.stderr)
    return 2
  cls, fn = COMMANDS[argv[0]]
  fn(tyro.cli(cls, args=argv[1:], prog=f"experiments.benchmark {argv[0]}"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
