# Official GPU Triton plus what triton_models/model.py imports in the Python backend.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN pip install --no-cache-dir "onnxruntime-gpu>=1.18,<2" "tokenizers>=0.20,<1" "numpy<2"
