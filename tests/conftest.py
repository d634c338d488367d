"""Fixtures shared by the tests (the helper functions are in helpers.py)."""
import pytest
import torch

import detrx


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """The device to test on; "cuda" runs only with a GPU and CUDA kernels compiled in."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device visible")
        if not detrx.build_info()["cuda"]:
            pytest.skip("detrx was built without its CUDA kernels")
    return request.param
