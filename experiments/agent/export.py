"""Export a trained agent to one `.npz` file: `python -m experiments.agent.export CHECKPOINT_DIR [--out FILE]`.

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


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.agent.export", description=__doc__.splitlines()[0])
  parser.add_argument("checkpoint", help="a directory written by python -m experiments.train --checkpoint-dir")
  parser.add_argument(
    "--out",
    default="agent.npz",
    help="the .npz to write (default: agent.npz here; the packaged agent, which --method muzero plays without "
    "--checkpoint, is experiments/agent/pretrained.npz, written only when named)",
  )
  args = parser.parse_args(argv)
  if not args.out.endswith(".npz"):
    parser.error(f"--out {args.out!r} must end in .npz")
  try:
    agent = load_agent(args.checkpoint)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  export_agent(agent, args.out)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB): grid {agent.num_filters} x {agent.num_values}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
