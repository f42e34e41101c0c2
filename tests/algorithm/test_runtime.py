import pytest
import torch

from acl_ray.algorithm.runtime import autocast, resolve_device, set_threads


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"run.device='cuda'.*auto or cpu") as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value)


def test_set_threads_uses_the_request_then_the_allotment(monkeypatch) -> None:
    assert set_threads(1) == 1 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what Ray gives a worker with 2 CPUs
    assert set_threads(0) == 2 == torch.get_num_threads()


@pytest.mark.parametrize(("precision", "dtype"), [("auto", torch.float32), ("fp32", torch.float32),
                                                  ("bf16", torch.bfloat16)])
def test_autocast_on_cpu(precision, dtype) -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), precision):
        assert (a @ b).dtype == dtype  # auto means bf16 on CUDA only
