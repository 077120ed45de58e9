"""The contracts the trainer, the served model and the worker share: one home each.

`serving.py` and `tensors.py` are copied verbatim into every version directory, where
`model.py` imports them inside the Triton container, so this file stays import-free and those
two import only the standard library, numpy, tokenizers, onnxruntime and each other.
"""
