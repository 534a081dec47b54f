"""``python -m bench.grpc_floor ADDRESS PHOTO WARMUP NAME=INPUT_TYPE...``: the bare gRPC client, the gRPC side's floor.

The least work any client of TF Serving does for one request of each input type, one request at a time, in a
process of its own so that its CPU time is that work's only: for ``encoded_image_string_tensor`` it sends the JPEG's
bytes as they came; for ``image_tensor`` it decodes them with Pillow (``np.asarray``) and sends the pixels as
``tensor_content``. Then it calls ``Predict`` (the blocking call, as the proxy makes a lone one) and reads the
detection outputs as numpy arrays.

It warms every model up, prints ``READY``, then waits: each line ``NAME N`` on stdin runs N timed calls of model
NAME and answers one JSON line (their seconds, and the CPU seconds the process used for them); end of input ends it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from bench.load import INPUT_KEY, OUTPUTS, REQUEST_TIMEOUT_S, grpc_channel
from proxy._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from proxy._proto.tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

ENCODED = "encoded_image_string_tensor"


def _shape(*sizes: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in sizes])


def request_for(name: str, input_type: str, body: bytes) -> predict_pb2.PredictRequest:
    """The PredictRequest of one image: the bytes as they came, or the decoded pixels."""
    if input_type == ENCODED:
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=_shape(1), string_val=[body])
    else:
        image: Image.Image = Image.open(io.BytesIO(body))
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image)
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_UINT8, tensor_shape=_shape(1, *pixels.shape), tensor_content=pixels.tobytes()
        )
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default"), output_filter=OUTPUTS
    )
    request.inputs[INPUT_KEY].CopyFrom(tensor)
    return request


def main(argv: list[str] | None = None) -> int:
    """Warm up, then measure what stdin asks for."""
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("address")
    parser.add_argument("photo", type=Path)
    parser.add_argument("warmup", type=int)
    parser.add_argument("models", nargs="+", metavar="NAME=INPUT_TYPE")
    args = parser.parse_args(argv)
    body = args.photo.read_bytes()
    input_types = dict(pair.split("=", 1) for pair in args.models)
    channel = grpc_channel(args.address)
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    grpc.channel_ready_future(channel).result(timeout=60)

    def once(name: str) -> dict[str, np.ndarray]:
        response = predict(request_for(name, input_types[name], body), timeout=REQUEST_TIMEOUT_S)
        return {
            output: np.asarray(proto.float_val, dtype=np.float32).reshape([d.size for d in proto.tensor_shape.dim])
            for output, proto in response.outputs.items()
        }

    for name in input_types:
        for _ in range(args.warmup):
            once(name)
    print("READY", flush=True)
    for line in sys.stdin:
        name, count = line.split()
        latencies = []
        cpu = time.process_time()
        for _ in range(int(count)):
            start = time.perf_counter()
            once(name)
            latencies.append(time.perf_counter() - start)
        print(json.dumps({"latencies_s": latencies, "cpu_s": time.process_time() - cpu}), flush=True)
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
