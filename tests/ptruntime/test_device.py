"""Where the PyTorch backend runs and in what precision, for every kind of machine (pure), and
its CUDA-graph sizes (pure; the graphs themselves need a GPU: benchmarks/gpu.py runs them)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from ptruntime.device import Machine, choose, for_program  # noqa: E402
from ptruntime.graphs import capture_sizes, padded_size  # noqa: E402

H200 = Machine(cuda=True, cuda_bf16=True, cpu_bf16=False, gpu_name="NVIDIA H200")
T4 = Machine(cuda=True, cuda_bf16=False, cpu_bf16=False, gpu_name="Tesla T4")
EPYC = Machine(cuda=False, cuda_bf16=False, cpu_bf16=False, cpu="AVX2")
SAPPHIRE = Machine(cuda=False, cuda_bf16=False, cpu_bf16=True, cpu="AMX")


@pytest.mark.parametrize(
    ("machine", "requested", "device", "precision"),
    [
        (H200, "auto", "cuda", "fp16"),
        (H200, "bf16", "cuda", "bf16"),
        (H200, "fp32", "cuda", "fp32"),
        (T4, "fp16", "cuda", "fp16"),
        (EPYC, "auto", "cpu", "fp32"),
        (EPYC, "fp32", "cpu", "fp32"),
        (SAPPHIRE, "auto", "cpu", "bf16"),
        (SAPPHIRE, "bf16", "cpu", "bf16"),
    ],
)
def test_device_and_precision_per_machine(machine, requested, device, precision):
    placement = choose(machine, requested)
    assert (placement.device, placement.precision) == (device, precision)
    assert placement.reason


@pytest.mark.parametrize(
    ("machine", "requested", "says"),
    [
        (T4, "bf16", "does not compute bf16"),
        (EPYC, "bf16", "no bf16 units"),
        (EPYC, "fp16", "needs a CUDA GPU; on the CPU: fp32$"),
        (SAPPHIRE, "fp16", r"needs a CUDA GPU; on the CPU: bf16 \(this CPU's bf16 units\) or fp32$"),
        (H200, "int8", "not int8"),
    ],
)
def test_what_a_machine_cannot_compute_is_refused_in_one_line(machine, requested, says):
    with pytest.raises(ValueError, match=says) as err:
        choose(machine, requested)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("machine", [H200, T4, EPYC, SAPPHIRE])
def test_a_program_runs_in_fp32_where_auto_would_go_lower_and_refuses_a_low_precision(machine):
    """A torch.export program asserts the dtypes it was traced in: fp32 on every machine."""
    auto = choose(machine, "auto")
    placement = for_program(auto, "auto")
    assert (placement.device, placement.precision) == (auto.device, "fp32")
    if auto.precision != "fp32":
        assert "torch.export program" in placement.reason
        low = "bf16" if machine.cpu_bf16 or machine.cuda_bf16 else "fp16"
        with pytest.raises(ValueError, match="computes in fp32") as err:
            for_program(choose(machine, low), low)
        assert "\n" not in str(err.value)


SIZES = [(1, (1,)), (6, (1, 2, 4, 6)), (8, (1, 2, 4, 8)), (32, (1, 2, 4, 8, 16, 32))]


@pytest.mark.parametrize(("max_batch", "sizes"), SIZES)
def test_graphs_are_captured_for_powers_of_two_and_the_largest_batch(max_batch, sizes):
    assert capture_sizes(max_batch) == sizes


def test_a_batch_is_padded_to_the_next_captured_size_or_run_eagerly_above_them():
    sizes = capture_sizes(8)
    assert [padded_size(b, sizes) for b in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, None]
    with pytest.raises(ValueError):
        capture_sizes(0)
