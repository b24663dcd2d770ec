"""The model artifact: its contract (files, graph inputs, checks), the ONNX export, and the model registry.

Serving imports ``contract`` and ``registry`` only; ``export`` and ``text_encoder`` need torch.
"""
