"""What GPU result files record about the machine: the host descriptors and the GPU's own speed."""

from __future__ import annotations

import pytest

from runtime.gpu.host_info import NVIDIA_SMI_FIELDS, parse_nvidia_smi


def test_nvidia_smi_line_reads_numbers_as_floats_and_keeps_text():
    line = "1980, 1980, 3201, 3201, 118.52, 700.00, 31, 580.65.06\n1755, 1980, 3201, 3201, 90.1, 700.00, 29, 580.65.06\n"
    got = parse_nvidia_smi(line)
    assert list(got) == list(NVIDIA_SMI_FIELDS)  # the first GPU only
    assert got["clocks.sm"] == 1980.0 and got["clocks.max.mem"] == 3201.0 and got["power.draw"] == 118.52
    assert got["temperature.gpu"] == 31.0 and got["driver_version"] == "580.65.06"
    na = parse_nvidia_smi("[N/A], 1980, 3201, 3201, [N/A], 700.00, 31, 580.65.06")
    assert na["clocks.sm"] == "[N/A]" and na["power.draw"] == "[N/A]" and na["power.limit"] == 700.0


@pytest.mark.parametrize("text", ["", "1980, 1980, 3201", "a, b, c, d, e, f, g, h, i"])
def test_an_nvidia_smi_line_of_another_shape_reads_as_nothing(text):
    assert parse_nvidia_smi(text) == {}


def test_describe_host_without_cuda_has_no_gpu_part():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the GPU part is measured there")
    from runtime.gpu.host_info import describe_host

    host = describe_host()
    assert host["gpu"] is None and host["launch_sync_us"] is None
    assert host["python_loop_1e6_s"] > 0 and host["cpu_cores"] >= 1
