"""The read side: the ONNX scorer, the Redis layout, the HTTP API for front-ends."""

from serving.scorer import Scorer
from serving.store import key

__all__ = ["Scorer", "key"]
