"""onnxruntime sessions for the read side: on CUDA when it really runs there, else on CPU.

The scorer (:mod:`serving.scorer`) and the stream's text encoder (:mod:`serving.text_encoder`) open their
sessions here, so both pick their execution provider the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# onnxruntime's log severities: 2 = warning (its default), 4 = fatal only.
_ORT_WARNING, _ORT_FATAL = 2, 4

log = logging.getLogger(__name__)


def inference_session(
    model: Path | bytes,
    probe: dict[str, np.ndarray],
    prefer_gpu: bool,
    threads: int | None = None,
    initializers: dict[str, ort.OrtValue] | None = None,
) -> ort.InferenceSession:
    """A session on CUDA if it really runs there, else on CPU.

    Args:
        model: An ONNX file, or a serialized model.
        probe: A feed the warm-up run on CUDA uses.
        prefer_gpu: Try CUDA first.
        threads: onnxruntime intra-op threads (None: its default, one per physical core).
        initializers: The model's external initializers, by name (onnxruntime copies them in).
    """

    def options() -> ort.SessionOptions:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if initializers:
            opts.add_external_initializers(list(initializers), list(initializers.values()))
        return opts

    source = model if isinstance(model, bytes) else str(model)
    if prefer_gpu and CUDA in ort.get_available_providers():
        # onnxruntime-gpu logs screens of errors when the CUDA libraries do not load: one line here instead.
        ort.set_default_logger_severity(_ORT_FATAL)
        try:
            sess = ort.InferenceSession(source, options(), providers=[CUDA, CPU])
            # onnxruntime silently falls back to CPU when the CUDA libraries do not load.
            if sess.get_providers()[0] == CUDA:
                sess.run(None, probe)
                return sess
            log.info("CUDA execution provider unavailable (no GPU or CUDA libraries); scoring on CPU")
        except Exception as exc:  # noqa: BLE001 - any CUDA failure means: serve on CPU
            log.warning("CUDA execution provider failed (%s); scoring on CPU", exc)
        finally:
            ort.set_default_logger_severity(_ORT_WARNING)
    return ort.InferenceSession(source, options(), providers=[CPU])
