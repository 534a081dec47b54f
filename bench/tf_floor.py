"""``python -m bench.tf_floor VERSION_DIR PHOTO WARMUP``: the embedded mode's floor, in a process of its own.

The least work any in-process user of the model can do per request: decode the JPEG with Pillow (``np.asarray``),
call the SavedModel's ``serving_default`` with it as a uint8 batch of one (as the embedded backend does:
``tf.saved_model.load``, ``function(inputs=tf.constant(...))``), read the outputs as numpy. One thread, one request
at a time.

It loads the model and runs the warm-up requests at once, prints ``READY``, then waits: each line N on stdin runs N
timed requests and answers one JSON line (their seconds); end of input ends it. The benchmark starts it while it sets
everything else up, and has it measure in rounds between the embedded proxy's, when nothing else runs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Load, warm up, time ``REQUESTS`` requests, print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.tf_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("photo", type=Path)
    parser.add_argument("warmup", type=int)
    args = parser.parse_args(argv)

    from odapi.tfenv import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    began = time.perf_counter()
    model = tf.saved_model.load(str(args.version_dir), tags=["serve"])
    function = model.signatures["serving_default"]
    loaded_s = time.perf_counter() - began
    body = args.photo.read_bytes()

    def once() -> dict[str, np.ndarray]:
        pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        outputs = function(inputs=tf.constant(pixels[np.newaxis]))
        return {name: tensor.numpy() for name, tensor in outputs.items() if name.startswith("detection_")}

    for _ in range(args.warmup):
        once()
    print("READY", flush=True)
    for line in sys.stdin:
        latencies = []
        for _ in range(int(line)):
            start = time.perf_counter()
            outputs = once()
            latencies.append(time.perf_counter() - start)
        scores = outputs["detection_scores"].reshape(-1) if latencies else np.zeros(0)
        answer = {"latencies_s": latencies, "load_s": loaded_s, "top_score": float(scores.max(initial=0.0))}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
