"""Export a trained model as an artifact (ONNX user tower + item files + weights + contract) and check parity.

The graph computes only the user vector; see :mod:`model_export.artifact.contract` for the layout and why.
Parity: ONNX Runtime (CPU) and eager PyTorch must agree on the user vectors of a fixed batch
within :data:`PARITY_TOLERANCE`, else :class:`~model_export.errors.ParityError`.
The torch weights travel in the artifact too (``weights.pt``), so that the periodic trainer can
fine-tune the serving version (:func:`load_model`) instead of training from scratch.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from model_export.artifact.contract import (
    BATCH_AXIS,
    CONTEXT_INPUTS,
    CONTRACT_FILE,
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    INPUT_NAME,
    ITEMS_FILE,
    MODEL_FILE,
    OPSET,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    TEXT_ENCODER_FILE,
    TEXT_PROJECTION_FILE,
    WEIGHTS_FILE,
    ModelContract,
    TensorSpec,
    read_item_embeddings,
    read_items,
    sha256_file,
    verify_artifact,
    write_contract,
)
from model_export.errors import ArtifactError, ParityError
from model_export.features import GAP_BUCKETS, GAPS_INPUT, SCENARIOS_INPUT, left_pad
from model_export.model import PAD, ModelConfig, SASRec

log = logging.getLogger(__name__)

# Rows of the fixed parity batch (lengths from 1 to max_len, plus one all-padding row).
PARITY_BATCH = 16
# Layout version of weights.pt (a dict of plain values and tensors, so torch.load(weights_only=True) reads it).
WEIGHTS_FORMAT = 1
# Where the text encoder graph is exported once and linked into every text model's artifact.
TEXT_ENCODER_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "text_encoder"


class _UserTower(nn.Module):
    """What the graph computes: item_seq (B, L) [+ time_gaps, scenarios (B, L)] -> user_vector (B, d)."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        named = dict(zip(input_names(self.model)[1:], context, strict=True))
        return self.model.user_vector(item_seq, named.get(GAPS_INPUT), named.get(SCENARIOS_INPUT))  # (B, d)


def input_names(model: SASRec) -> list[str]:
    """The graph's inputs: ``item_seq``, then the context inputs the model reads."""
    used = {GAPS_INPUT: model.cfg.time_gaps, SCENARIOS_INPUT: model.cfg.scenarios}
    return [INPUT_NAME, *(name for name in CONTEXT_INPUTS if used[name])]


def parity_batch(n_items: int, max_len: int, seed: int = 0) -> np.ndarray:
    """A fixed int64 (PARITY_BATCH, max_len) batch: random items, history lengths 0..max_len."""
    rng = np.random.default_rng(seed)
    lengths = np.linspace(0, max_len, PARITY_BATCH).astype(int)
    return left_pad([rng.integers(1, n_items + 1, size=n).tolist() for n in lengths], max_len, PAD)


def parity_inputs(model: SASRec, seed: int = 0) -> dict[str, np.ndarray]:
    """The fixed parity feed of every graph input: random items, gap buckets and scenarios on real positions."""
    rows = parity_batch(model.n_items, model.cfg.max_len, seed)
    rng = np.random.default_rng(seed + 1)
    real = rows != PAD
    context = {
        GAPS_INPUT: np.where(real, rng.integers(1, GAP_BUCKETS, size=rows.shape), PAD),
        SCENARIOS_INPUT: np.where(real, rng.integers(1, model.n_scenarios + 2, size=rows.shape), PAD),
    }
    return {name: rows if name == INPUT_NAME else context[name].astype(np.int64) for name in input_names(model)}


def export_onnx(model: SASRec, path: Path) -> None:
    """Write the user tower as ONNX with a dynamic batch axis (sequence length fixed at max_len).

    Uses the torch.export-based exporter (``dynamo=True``; the TorchScript one is deprecated).
    """
    # A fresh wrapper is in training mode, and export keeps the mode: without eval() dropout is exported.
    tower = _UserTower(model.eval()).eval()
    example = {name: torch.from_numpy(v[:2]) for name, v in parity_inputs(model).items()}
    # The exporter warns about every torchvision op it cannot register; we use none of them.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        _export(tower, example, path)
    finally:
        exporter_log.setLevel(level)


def _export(tower: nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    batch = torch.export.Dim(BATCH_AXIS)
    torch.onnx.export(
        tower,
        tuple(example.values()),
        str(path),
        input_names=list(example),
        output_names=[OUTPUT_NAME],
        # forward(item_seq, *context): the context tensors are one (varargs) argument to torch.export.
        dynamic_shapes={"item_seq": {0: batch}, "context": tuple({0: batch} for _ in list(example)[1:])},
        opset_version=OPSET,
        dynamo=True,
        # One self-contained file (the default would put weights in model.onnx.data): the contract
        # checksums exactly the files it lists.
        external_data=False,
        verbose=False,
    )


def check_parity(model: SASRec, onnx_path: Path, tolerance: float = PARITY_TOLERANCE) -> float:
    """Compare ONNX Runtime (CPU) with eager torch on :func:`parity_batch`.

    Returns:
        The max absolute difference of the user vectors.

    Raises:
        ParityError: the difference exceeds ``tolerance``.
    """
    feed = parity_inputs(model)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run([OUTPUT_NAME], feed)
    with torch.no_grad():
        want = model.user_vector(
            torch.from_numpy(feed[INPUT_NAME]),
            *(torch.from_numpy(feed[n]) if n in feed else None for n in CONTEXT_INPUTS),
        ).numpy()
    diff = float(np.abs(got - want).max())
    log.info(f"  parity: max |onnxruntime - torch| = {diff:.2e} (tolerance {tolerance:.0e})")
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(diff, tolerance)
    return diff


def export_artifact(
    model: SASRec,
    items: Sequence[str],
    artifact_dir: Path,
    *,
    version: str,
    metrics: dict[str, Any],
    train_data: dict[str, Any],
    parent: str | None = None,
    hyper_parameters: dict[str, Any] | None = None,
    scenarios: Sequence[str] = (),
    text_encoder: Path | None = None,
) -> Path:
    """Write a complete, verified artifact directory.

    Args:
        model: The trained model (moved to CPU, eval mode).
        items: Item index: ``items[i]`` is row ``i + 1``.
        artifact_dir: Must not exist yet, or be empty.
        version: Model version string for the contract.
        metrics: Offline metrics ``{protocol: {model: {...}}}``.
        train_data: At least ``min_ts`` and ``max_ts`` (epoch ms) of the training events.
        parent: Version this model was fine-tuned from.
        hyper_parameters: Training config, recorded for reproduction.
        scenarios: The model's scenario names (ids 2..), in order.
        text_encoder: The text encoder ONNX file to ship with a text model (default: the cached
            export of :func:`model_export.artifact.text_encoder.cached_text_encoder`); hard-linked when it can be.

    Returns:
        ``artifact_dir``.

    Raises:
        ParityError: the ONNX graph does not match the model.
        ArtifactError: the directory exists and is not empty.
    """
    if artifact_dir.exists() and any(artifact_dir.iterdir()):
        raise ArtifactError(artifact_dir, "the output directory is not empty")
    if len(items) != model.n_items:
        msg = f"{len(items)} item ids for a model of {model.n_items} items"
        raise ValueError(msg)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    export_onnx(model, artifact_dir / MODEL_FILE)
    diff = check_parity(model, artifact_dir / MODEL_FILE)
    emb = model.output_matrix().detach().numpy().astype(np.float32)  # (N + 1, d)
    np.save(artifact_dir / EMBEDDINGS_FILE, emb)
    (artifact_dir / ITEMS_FILE).write_text(json.dumps([None, *items]), encoding="utf-8")
    save_weights(model, artifact_dir / WEIGHTS_FILE, scenarios)
    files = [MODEL_FILE, ITEMS_FILE, EMBEDDINGS_FILE, WEIGHTS_FILE]
    text_files: dict[str, str | None] = {"text_encoder_file": None, "text_projection_file": None}
    if model.text_proj is not None:
        _link_or_copy(text_encoder or _default_text_encoder(), artifact_dir / TEXT_ENCODER_FILE)
        # The rows the scorer builds for new items are text-only rows: calibrated as output_matrix's.
        scale = float(model.text_only_scale)
        weight = model.text_proj.weight.detach().numpy().T * scale  # (text_dim, d)
        bias = model.text_proj.bias.detach().numpy()[None, :] * scale  # (1, d)
        np.save(artifact_dir / TEXT_PROJECTION_FILE, np.concatenate([weight, bias]).astype(np.float32))
        files += [TEXT_ENCODER_FILE, TEXT_PROJECTION_FILE]
        text_files = {"text_encoder_file": TEXT_ENCODER_FILE, "text_projection_file": TEXT_PROJECTION_FILE}
    seq_spec: list[int | str] = [BATCH_AXIS, model.cfg.max_len]
    contract = ModelContract(
        format_version=FORMAT_VERSION,
        model_version=version,
        model_type="sasrec",
        inputs=[TensorSpec(name, "int64", seq_spec) for name in input_names(model)],
        outputs=[TensorSpec(OUTPUT_NAME, "float32", [BATCH_AXIS, model.cfg.d])],
        max_len=model.cfg.max_len,
        padding_id=PAD,
        padding_side="left",
        n_items=model.n_items,
        embedding_dim=model.cfg.d,
        score="dot",
        item_index_file=ITEMS_FILE,
        item_embeddings_file=EMBEDDINGS_FILE,
        train_data=train_data,
        metrics=metrics,
        parent=parent,
        created_at=int(time.time() * 1000),
        hyper_parameters=hyper_parameters or {},
        parity={"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE},
        files={name: sha256_file(artifact_dir / name) for name in files},
        scenarios=list(scenarios),
        **text_files,
    )
    write_contract(artifact_dir, contract)
    verify_artifact(artifact_dir)
    log.info(f"  exported {artifact_dir} ({CONTRACT_FILE}: {model.n_items} items, d={model.cfg.d})")
    return artifact_dir


def _default_text_encoder() -> Path:
    from model_export.artifact.text_encoder import cached_text_encoder

    return cached_text_encoder(TEXT_ENCODER_CACHE)


def _link_or_copy(src: Path, dst: Path) -> None:
    # Every version of a text model ships the same ~90 MB encoder: a hard link costs no disk.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def save_weights(model: SASRec, path: Path, scenarios: Sequence[str] = ()) -> None:
    """Write what :func:`load_model` needs to rebuild the module: its ModelConfig, shape, vocabulary and state_dict."""
    payload = {
        "format": WEIGHTS_FORMAT,
        "model_type": "sasrec",
        "n_items": model.n_items,
        "n_scenarios": model.n_scenarios,
        "text_dim": model.text_dim,
        "scenarios": list(scenarios),
        "config": asdict(model.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)


@dataclass
class LoadedModel:
    """A model rebuilt from an artifact's weights, ready to fine-tune.

    Attributes:
        model: The module in eval mode; ``items[i]`` is its row ``i + 1``.
        items: The artifact's item index without the padding row.
        contract: The artifact's (verified) contract.
    """

    model: SASRec
    items: list[str]
    contract: ModelContract
    scenarios: list[str]


def load_model(artifact_dir: Path | str) -> LoadedModel | None:
    """Rebuild the torch model of an artifact from its ``weights.pt`` (verified first).

    Args:
        artifact_dir: An artifact folder, e.g. ``Registry.path("v0003")``.

    Returns:
        The model, or None when the artifact carries no weights (exported before they were kept):
        the caller then trains from scratch.

    Raises:
        ArtifactError: the artifact fails verification, or its weights do not rebuild the model the
            contract and the item embeddings describe.
    """
    artifact_dir = Path(artifact_dir)
    contract = verify_artifact(artifact_dir)
    if WEIGHTS_FILE not in contract.files:
        return None
    try:
        # weights_only: a tampered pickle cannot run code (and the checksum has already been checked).
        payload = torch.load(artifact_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
            fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            msg = f"{WEIGHTS_FILE} has format {fmt!r} (this code reads {WEIGHTS_FORMAT})"
            raise ValueError(msg)
        # Weights written before the context inputs and the text tower existed are id-only models.
        cfg = ModelConfig(**{"time_gaps": False, "scenarios": False, "text": False, **payload["config"]})
        n_items = int(payload["n_items"])
        if (n_items, cfg.max_len, cfg.d) != (contract.n_items, contract.max_len, contract.embedding_dim):
            msg = (
                f"{WEIGHTS_FILE} is for {n_items} items, max_len {cfg.max_len}, d {cfg.d}; the contract says "
                f"{contract.n_items}, {contract.max_len}, {contract.embedding_dim}"
            )
            raise ValueError(msg)
        model = SASRec(n_items, cfg, int(payload.get("n_scenarios", 0)), int(payload.get("text_dim", 0)))
        # Weights written before the text-only calibration existed: scale 1.
        model.load_state_dict({"text_only_scale": torch.tensor(1.0), **payload["state_dict"]})
        scenarios = [str(s) for s in payload.get("scenarios", [])]
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, pickle.UnpicklingError) as exc:
        raise ArtifactError(artifact_dir, f"{WEIGHTS_FILE} does not rebuild the model: {exc}") from exc
    model.eval()
    emb = read_item_embeddings(artifact_dir, contract)
    if not np.allclose(model.output_matrix().detach().numpy(), emb, atol=1e-6):
        raise ArtifactError(artifact_dir, f"{WEIGHTS_FILE} and {EMBEDDINGS_FILE} hold different item embeddings")
    items = [str(i) for i in read_items(artifact_dir, contract)[1:]]
    return LoadedModel(model, items, contract, scenarios)
