"""The model artifact contract: what the trainer writes and the scorer (and registry) read.

An artifact is a directory::

    model.onnx            input  item_seq     int64   (batch, max_len)  rows, newest last, 0-padded left
                          input  time_gaps    int64   (batch, max_len)  optional: gap bucket to the previous
                                                                        event (:func:`gap_buckets`), aligned
                          input  scenarios    int64   (batch, max_len)  optional: scenario ids (:func:`scenario_ids`
                                                                        over the contract's ``scenarios``)
                          output user_vector  float32 (batch, dim)      the user's next-item query vector
    item_embeddings.npy   float32 (n_items + 1, dim); row 0 is padding (zeros)
    items.json            JSON list of n_items + 1 entries: row -> item id (null at row 0)
    text_encoder.onnx     optional: the item text encoder (all-MiniLM-L6-v2 + mean pooling + L2 norm),
                          (input_ids, attention_mask) -> text_embedding (batch, 384)
    text_projection.npy   optional: float32 (385, dim): text embedding -> item row (384 rows of weights,
                          then the bias): how an item that arrives after training gets its row
    weights.pt            optional: the torch state_dict and ModelConfig, for fine-tuning (warm start);
                          the serving side never reads it, and artifacts without it stay valid
    contract.json         ModelContract below, with the sha256 of every other file

Scores are ``user_vector @ item_embeddings.T`` (B, n_items + 1). Scoring and top-k stay outside
the graph so that a scorer can restrict, extend or re-rank the catalog without re-exporting,
and so the graph's cost does not grow with the catalog (a (B, 64) x (64, 4k) matmul is ~1 ms in
numpy; a larger catalog would move this into a second graph or a GPU ANN index).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from model_export.errors import ArtifactError
from model_export.features import CONTEXT_INPUTS, INPUT_NAME

FORMAT_VERSION = 1
CONTRACT_FILE = "contract.json"
MODEL_FILE = "model.onnx"
ITEMS_FILE = "items.json"
EMBEDDINGS_FILE = "item_embeddings.npy"
WEIGHTS_FILE = "weights.pt"
OUTPUT_NAME = "user_vector"
BATCH_AXIS = "batch"
# ONNX opset of every graph we write (the user tower, the text encoder, the scorer's item scoring):
# well supported by onnxruntime 1.2x+ and by both torch exporters.
OPSET = 18
# Max |onnxruntime - torch| of an exported graph on unit-scale outputs: float32 round-off through a few
# layers stays ~1e-6; 1e-4 catches any real divergence (a wrong mask or pooling moves entries by 1e-2).
PARITY_TOLERANCE = 1e-4
# The text encoder graph (serving.text_encoder feeds and reads these names).
TEXT_INPUT_IDS, TEXT_ATTENTION_MASK, TEXT_OUTPUT_NAME = "input_ids", "attention_mask", "text_embedding"
TEXT_TOKENS_AXIS = "tokens"
# Keys of the text encoder file's metadata_props: "streamrec.max_tokens", "streamrec.encoder_version", ...
TEXT_META_PREFIX = "streamrec."


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a graph input or output; ``"batch"`` marks the dynamic axis."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass(frozen=True)
class ModelContract:
    """Everything a consumer must know to feed and read an artifact (``contract.json``).

    Attributes:
        format_version: Layout version of this contract (:data:`FORMAT_VERSION`).
        model_version: Version string; the registry stamps its own (``v0001``) on publish.
        model_type: Architecture name, e.g. ``"sasrec"`` (the metrics name the model ``"streamrec"``, as the
            harness does).
        inputs: Graph inputs (one: ``item_seq``).
        outputs: Graph outputs (one: ``user_vector``).
        max_len: Sequence length L of ``item_seq``; longer histories keep their newest items.
        padding_id: Row used for padding (0): fills the left of short histories, never recommended.
        padding_side: ``"left"``: the newest item is always at position L - 1.
        n_items: Real items N (rows 1..N of the item files).
        embedding_dim: Width of ``user_vector`` and of the item embeddings.
        score: How to score items: ``"dot"`` = ``user_vector @ item_embeddings.T``.
        item_index_file: Row -> item id file.
        item_embeddings_file: Item embedding matrix file.
        train_data: Training data range and size: ``source``, ``min_ts``, ``max_ts`` (epoch ms), ...
        metrics: Offline metrics: ``{protocol: {model_name: {"recall@10": ..., ...}}}``.
        parent: Version this one was fine-tuned from, or None.
        created_at: Export time, epoch ms.
        hyper_parameters: The training config, for reproduction.
        parity: ``{"max_abs_diff": ..., "tolerance": ...}`` of the export check.
        files: sha256 hex digest of every file of the artifact except ``contract.json``.
        scenarios: Scenario names of ids 2.. of the ``scenarios`` input (0 padding, 1 unknown).
        text_encoder_file: The item text encoder graph, or None (the model has no text tower).
        text_projection_file: The text -> item row projection, or None.
    """

    format_version: int
    model_version: str
    model_type: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_len: int
    padding_id: int
    padding_side: str
    n_items: int
    embedding_dim: int
    score: str
    item_index_file: str
    item_embeddings_file: str
    train_data: dict[str, Any]
    metrics: dict[str, Any]
    parent: str | None
    created_at: int
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    scenarios: list[str] = field(default_factory=list)
    text_encoder_file: str | None = None
    text_projection_file: str | None = None

    def to_json(self) -> str:
        """The contract as indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: Path | str = "contract") -> ModelContract:
        """Parse and check a contract.

        Raises:
            ArtifactError: a field is missing, unknown or not sane.
        """
        names = {f.name for f in fields(cls)}
        optional = {f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}
        missing = {n for n in names if n not in data and n not in optional}
        if missing or set(data) - names:
            raise ArtifactError(
                where, f"contract fields missing {sorted(missing)} / unknown {sorted(set(data) - names)}"
            )
        try:
            values = dict(data)
            values["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
            values["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
            contract = cls(**values)
        except TypeError as exc:
            raise ArtifactError(where, f"malformed contract: {exc}") from exc
        contract.check(where)
        return contract

    def check(self, where: Path | str = "contract") -> None:
        """Raise :class:`ArtifactError` unless every field is sane and consistent with the others."""
        problems = []
        if self.format_version != FORMAT_VERSION:
            problems.append(f"format_version {self.format_version} (this code reads {FORMAT_VERSION})")
        if not self.model_version:
            problems.append("empty model_version")
        for name, value in (
            ("max_len", self.max_len),
            ("n_items", self.n_items),
            ("embedding_dim", self.embedding_dim),
        ):
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name}={value!r} must be a positive integer")
        if self.padding_id != 0 or self.padding_side != "left":
            problems.append(f"padding {self.padding_id}/{self.padding_side} (expected 0/left)")
        if self.score != "dot":
            problems.append(f"score {self.score!r} (expected 'dot')")
        seq_spec: list[int | str] = [BATCH_AXIS, self.max_len]
        expect_in = [TensorSpec(INPUT_NAME, "int64", seq_spec)]
        expect_in += [TensorSpec(n, "int64", seq_spec) for n in CONTEXT_INPUTS if n in {t.name for t in self.inputs}]
        expect_out = [TensorSpec(OUTPUT_NAME, "float32", [BATCH_AXIS, self.embedding_dim])]
        if self.inputs != expect_in or self.outputs != expect_out:
            problems.append(
                f"inputs/outputs {self.inputs}/{self.outputs} (expected {expect_in}/{expect_out})"
            )
        if (self.text_encoder_file is None) != (self.text_projection_file is None):
            problems.append("text_encoder_file and text_projection_file come together")
        listed = {MODEL_FILE, self.item_index_file, self.item_embeddings_file}
        listed |= {f for f in (self.text_encoder_file, self.text_projection_file) if f}
        if listed - set(self.files):
            problems.append(f"files lists {sorted(self.files)}, not every artifact file")
        if not all(isinstance(d, str) and len(d) == 64 for d in self.files.values()):
            problems.append("a checksum is not a sha256 hex digest")
        if (
            not {"min_ts", "max_ts"} <= set(self.train_data)
            or self.train_data["min_ts"] > self.train_data["max_ts"]
        ):
            problems.append(f"train_data {self.train_data} lacks a min_ts <= max_ts range")
        if not _finite_metrics(self.metrics):
            problems.append("metrics hold a non-finite or non-numeric value")
        if problems:
            raise ArtifactError(where, "; ".join(problems))


def _finite_metrics(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(_finite_metrics(v) for v in value.values())
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int | float) and math.isfinite(value)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_contract(artifact_dir: Path, contract: ModelContract) -> None:
    """Write ``contract.json`` atomically (temp file + rename)."""
    atomic_write_text(artifact_dir / CONTRACT_FILE, contract.to_json())


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a partial one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; artifacts and registry state are for every reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_contract(artifact_dir: Path | str) -> ModelContract:
    """Read and check ``contract.json`` (not the files; see :func:`verify_artifact`).

    Raises:
        ArtifactError: the contract is missing, not JSON, or not sane.
    """
    path = Path(artifact_dir) / CONTRACT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(artifact_dir, f"{CONTRACT_FILE} is missing") from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(artifact_dir, f"{CONTRACT_FILE} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(artifact_dir, f"{CONTRACT_FILE} is not a JSON object")
    return ModelContract.from_dict(data, artifact_dir)


def verify_artifact(artifact_dir: Path | str) -> ModelContract:
    """Check an artifact completely: contract sane, every file present with its checksum, shapes agree.

    Returns:
        The contract.

    Raises:
        ArtifactError: what is wrong, first problem found.
    """
    artifact_dir = Path(artifact_dir)
    contract = load_contract(artifact_dir)
    unlisted = sorted(
        p.name for p in artifact_dir.iterdir() if p.name not in contract.files and p.name != CONTRACT_FILE
    )
    if unlisted:
        raise ArtifactError(artifact_dir, f"files {unlisted} are not in the contract, so not checksummed")
    for name, digest in contract.files.items():
        path = artifact_dir / name
        if not path.is_file():
            raise ArtifactError(artifact_dir, f"{name} is missing")
        if sha256_file(path) != digest:
            raise ArtifactError(
                artifact_dir, f"{name} does not match its sha256 in the contract (corrupted?)"
            )
    items = read_items(artifact_dir, contract)
    emb = np.load(artifact_dir / contract.item_embeddings_file, mmap_mode="r")
    if len(items) != contract.n_items + 1 or items[0] is not None or None in items[1:]:
        raise ArtifactError(artifact_dir, f"{ITEMS_FILE} must list null then {contract.n_items} item ids")
    if len(set(items[1:])) != contract.n_items:
        raise ArtifactError(artifact_dir, f"{ITEMS_FILE} has duplicate item ids")
    if emb.shape != (contract.n_items + 1, contract.embedding_dim) or emb.dtype != np.float32:
        raise ArtifactError(
            artifact_dir,
            f"item embeddings are {emb.dtype}{emb.shape}, expected float32"
            f"{(contract.n_items + 1, contract.embedding_dim)}",
        )
    graph_io = _onnx_io(artifact_dir / MODEL_FILE)
    if graph_io != (contract.inputs, contract.outputs):
        problem = f"{MODEL_FILE} has inputs/outputs {graph_io}, not the contract's"
        raise ArtifactError(artifact_dir, problem)
    return contract


def _onnx_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as :class:`TensorSpec` (weights are not loaded)."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise ArtifactError(path.parent, f"{MODEL_FILE} is not a readable ONNX model: {exc}") from exc

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return TensorSpec(v.name, dtype, [d.dim_param or d.dim_value for d in t.shape.dim])

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


def read_items(artifact_dir: Path | str, contract: ModelContract) -> list[str | None]:
    """The row -> item id list (``None`` at the padding row)."""
    try:
        items = json.loads((Path(artifact_dir) / contract.item_index_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(artifact_dir, f"{contract.item_index_file} is unreadable: {exc}") from exc
    if not isinstance(items, list):
        raise ArtifactError(artifact_dir, f"{contract.item_index_file} is not a JSON list")
    return items


def read_item_embeddings(artifact_dir: Path | str, contract: ModelContract) -> np.ndarray:
    """The item matrix, float32 (n_items + 1, embedding_dim)."""
    return np.load(Path(artifact_dir) / contract.item_embeddings_file)


TEXT_ENCODER_FILE = "text_encoder.onnx"
TEXT_PROJECTION_FILE = "text_projection.npy"


def read_text_projection(artifact_dir: Path | str, contract: ModelContract) -> tuple[np.ndarray, np.ndarray] | None:
    """The text -> item row projection ``(weight (text_dim, dim), bias (dim,))``, or None without a text tower."""
    if contract.text_projection_file is None:
        return None
    packed = np.load(Path(artifact_dir) / contract.text_projection_file)  # (text_dim + 1, dim)
    return packed[:-1], packed[-1]


