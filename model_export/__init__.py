"""The learning side: data sets, the sequential model, training, evaluation, ONNX export, the registry, the trainer."""

from typing import Any

from model_export.datasets import load_dataset
from model_export.errors import ModelExportError
from model_export.registry import Registry

__all__ = ["ModelExportError", "Registry", "load_dataset", "train_and_export", "train_and_export_events"]


def __getattr__(name: str) -> Any:
    # The training entry points load torch lazily: serving imports model_export.artifact and
    # must not pay for torch (seconds, hundreds of MB) just to read a contract.
    if name in ("train_and_export", "train_and_export_events"):
        from model_export import train

        return getattr(train, name)
    msg = f"module 'model_export' has no attribute {name!r}"
    raise AttributeError(msg)
