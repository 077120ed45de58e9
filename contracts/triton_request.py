"""The one way this project asks Triton to classify texts: the TEXT input and named outputs.

The worker, `trainer evaluate --triton-url`, `trainer publish`'s warm-up, the benchmark and the
tests all build their requests here, so the input's shape ([texts, 1]), datatype (BYTES) and
encoding (UTF-8) are written once, next to the names in `contracts/tensors.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient

from contracts import tensors

BYTES = "BYTES"


def text_input(texts: Sequence[str | bytes]) -> grpcclient.InferInput:
    """`texts` as the TEXT input, one per row; str is UTF-8 encoded, bytes go as they are."""
    data = np.array(
        [[text if isinstance(text, bytes) else text.encode("utf-8")] for text in texts],
        dtype=np.object_,
    )
    text = grpcclient.InferInput(tensors.TEXT, list(data.shape), BYTES)
    text.set_data_from_numpy(data)
    return text


def requested_outputs(names: Sequence[str]) -> list[grpcclient.InferRequestedOutput]:
    """The outputs to send back, by name (`tensors.PROBS`, ...); the rest are not computed."""
    return [grpcclient.InferRequestedOutput(name) for name in names]
