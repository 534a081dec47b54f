"""TF Serving's gRPC API re-declared for the proxy, so talking to TF Serving needs no TensorFlow.

`protos/` holds trimmed, wire-compatible .proto files at TF Serving's and TensorFlow's own paths; the
modules beside it are generated from them by `scripts/gen_protos.py` (do not edit them by hand):

    from proxy._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    from proxy._proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
    from proxy._proto.tensorflow_serving.apis import model_service_pb2_grpc
    from proxy._proto.tensorflow.core.framework import tensor_pb2, types_pb2

Every message lives in the private pool `proxy._proto._pool.POOL`, never in protobuf's default pool, so
these classes are distinct from the official `tensorflow_serving.apis` ones even where the full names
agree: build sub-messages from the same package (for ModelSpec.version use
`proxy._proto.google.protobuf.wrappers_pb2.Int64Value`, or a dict), and move data between the two sets
as bytes.
"""
