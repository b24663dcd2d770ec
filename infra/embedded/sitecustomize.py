"""Start-up hook of every Python interpreter Flink embeds in a JVM (thread mode); a no-op anywhere else.

It imports the C extensions the jobs use, once, in the interpreter's start-up thread. Why: in thread mode
each Python operator's task thread unpickles its function on first use, so the first import of a C extension
happens on one of several task threads at once. Initialising onnxruntime's extension there intermittently hung
the whole job start (every Python task stuck INITIALIZING, about 1 start in 10 at parallelism 2 here; py-spy
showed the import blocked inside ``ExtensionFileLoader.create_module``). Imported here, before any task thread
runs Python, they initialise on one thread. ``infra.flink_cluster.python_path`` puts this folder on the path.
"""

import importlib
import os
import sys

PRELOAD = ("numpy", "onnx", "onnxruntime", "tokenizers")  # tokenizers: serving.text_encoder


def _embedded_in_jvm() -> bool:
    try:
        return os.path.basename(os.readlink("/proc/self/exe")) == "java"
    except OSError:  # no /proc (not Linux): nothing to do
        return False


if _embedded_in_jvm():
    for _name in PRELOAD:
        try:
            importlib.import_module(_name)
        except Exception as exc:  # noqa: BLE001 - never fail the interpreter's start; the job reports its own errors
            print(f"streamrec: could not preload {_name}: {exc}", file=sys.stderr)
