"""Export a trained agent to one `.npz` file: `python -m experiments.agent.export CHECKPOINT [--out FILE]`.

The packaged agent (`experiments/agent/pretrained.npz`, what `--method muzero`
plays without `--checkpoint`) is made from random training worlds only by

    python -m experiments.train --preset pretrain --checkpoint-dir checkpoints/pretrain
    python -m experiments.agent.export checkpoints/pretrain --out experiments/agent/pretrained.npz

(the `pretrain` preset: `standard` and `masked` worlds of the training split,
indices from `cube_env.worlds.AGENT_WORLD_INDEX`; never an evaluation world).
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments.agent.loading import export_agent, load_agent
from experiments.launch.errors import UsageError, prepare_out
from experiments.launch.resume import refuse_repeated_flags


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.agent.export", description=__doc__.splitlines()[0])
  parser.add_argument(
    "checkpoint",
    metavar="CHECKPOINT",
    help="a directory written by python -m experiments.train --checkpoint-dir (or an exported agent .npz)",
  )
  parser.add_argument(
    "--out",
    default="agent.npz",
    help="the .npz to write (default: agent.npz here; the packaged agent, which --method muzero plays without "
    "--checkpoint, is experiments/agent/pretrained.npz, written only when named)",
  )
  try:
    refuse_repeated_flags(sys.argv[1:] if argv is None else argv)
  except UsageError as err:
    parser.error(str(err))
  args = parser.parse_args(argv)
  if not args.out.endswith(".npz"):
    parser.error(f"--out {args.out!r} must end in .npz")
  try:  # its errors name the argument, CHECKPOINT (an audit: they named --checkpoint, a flag export does not have)
    agent = load_agent(args.checkpoint, flag="CHECKPOINT")
    prepare_out(args.out, "--out")
    export_agent(agent, args.out)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB): grid {agent.num_filters} x {agent.num_values}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
