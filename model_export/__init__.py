"""The learning side: data sets, the sequential model, training, evaluation, ONNX export, the registry, the trainer."""

from typing import Any

from model_export.artifact.registry import Registry
from model_export.data.datasets import load_dataset
from model_export.errors import ModelExportError

__all__ = ["ModelExportError", "Registry", "load_dataset", "train_and_export", "train_and_export_events"]


def __getattr__(name: str) -> Any:
    # The training entry points load torch lazily: serving imports model_export.artifact.contract and
    # must not pay for torch (seconds, hundreds of MB) just to read a contract.
    if name in ("train_and_export", "train_and_export_events"):
        from model_export import pipeline

        return getattr(pipeline, name)
    msg = f"module 'model_export' has no attribute {name!r}"
    raise AttributeError(msg)
