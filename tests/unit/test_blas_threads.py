"""`worker run` caps numpy's and scipy's BLAS pools at NUMPY_THREADS (idle BLAS threads spin
and cost the one-threaded worker CPU per message)."""

import numpy as np
import scipy.stats  # noqa: F401 - loads scipy's own BLAS, as the drift path does
from threadpoolctl import threadpool_info

from worker.cli import limit_blas_threads


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_every_blas_pool_is_capped_while_the_limiter_is_held():
    np.ones((2, 2)) @ np.ones((2, 2))
    assert blas_threads(), "no BLAS pool loaded: nothing to cap"
    limiter = limit_blas_threads(1)
    try:
        assert set(blas_threads()) == {1}
    finally:
        limiter.restore_original_limits()
