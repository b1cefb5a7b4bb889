"""TensorBoard event files read back in tests (TFRecord framing, tensorboardX's protos)."""

import glob
import os
import struct

from tensorboardX.proto import event_pb2


def scalars(logdir) -> dict[str, dict[int, float]]:
  """`{tag: {step: value}}` over every event file of `logdir` (a later file's value at a step wins)."""
  out: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*"))):
    with open(path, "rb") as fh:
      data, i = fh.read(), 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = v.simple_value
  return out
