"""Generated protobuf messages of the Open Inference Protocol v2 over gRPC.

``predict_v2.proto`` is the source; ``predict_v2_pb2.py`` is generated from it
and committed. Regenerate with ``python -m jaxtx.serving._proto`` (needs
``grpcio-tools`` 1.78, whose protoc matches protobuf 6.x; not a runtime
dependency).
"""
