"""Reading `vllm bench serve --save-result` JSON into a row keyed by vLLM's metric names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluid.errors import InputError
from runtime.vllm_results import latency_metrics_present, read_vllm_result

FIXTURE = Path(__file__).parent / "data" / "vllm_bench_serve_result.json"


def test_fixture_row_has_vllm_names_and_values():
    row = read_vllm_result(FIXTURE)
    assert row["scheduler"] == "vllm (measured)"
    assert row["request_throughput"] == pytest.approx(1000 / 52.5)
    assert row["output_throughput"] == pytest.approx(198000 / 52.5)
    assert row["total_token_throughput"] == pytest.approx((215000 + 198000) / 52.5)
    assert row["request_goodput"] is None
    assert (row["mean_ttft_ms"], row["median_ttft_ms"], row["std_ttft_ms"], row["p99_ttft_ms"]) == (41.2, 35.0, 20.5, 120.0)
    assert row["p99.9_itl_ms"] == 45.0 and row["p99_e2el_ms"] == 6100.0
    assert row["model_id"] == "meta-llama/Llama-2-7b-hf" and row["num_prompts"] == 1000
    # per-request lists are not metrics and stay out of the row
    assert not {"ttfts", "itls", "input_lens", "generated_texts", "errors"} & set(row)
    assert latency_metrics_present(row) == ["ttft", "tpot", "itl", "e2el"]


def test_only_the_chosen_percentile_metrics(tmp_path):
    data = json.loads(FIXTURE.read_text())
    for key in [k for k in data if k.endswith(("_tpot_ms", "_itl_ms"))]:
        del data[key]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    row = read_vllm_result(path)
    assert latency_metrics_present(row) == ["ttft", "e2el"] and "mean_itl_ms" not in row


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d.pop("output_throughput"), "missing output_throughput"),
        (lambda d: d.update(mean_ttft_ms="fast"), "field 'mean_ttft_ms': must be a finite non-negative number"),
        (lambda d: d.update(request_throughput=-1), "field 'request_throughput'"),
        (lambda d: [d.pop(k) for k in list(d) if k.endswith("_ms")], "no latency statistics"),
    ],
)
def test_bad_result_files(tmp_path, change, fragment):
    data = json.loads(FIXTURE.read_text())
    change(data)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=fragment) as info:
        read_vllm_result(path)
    assert str(path) in str(info.value)


def test_nan_in_a_result_file_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(FIXTURE.read_text().replace('"mean_ttft_ms": 41.2', '"mean_ttft_ms": NaN'))
    with pytest.raises(InputError, match="NaN is not a number JSON allows"):
        read_vllm_result(path)


def test_compare_shows_the_measured_vllm_row_in_the_serving_table(tmp_path, capsys):
    from validation.cli import main

    workload = tmp_path / "w.yaml"
    workload.write_text("name: tiny\nkv_capacity_tokens: 20000\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}\n"
                        "types:\n  - {name: short, prefill: 20, decode: 10, rate_per_s: 20.0}\n", encoding="utf-8")
    assert main(["compare", str(workload), "--schedulers", "fcfs", "--requests", "100", "--vllm-result", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("vllm: vllm_bench_serve_result"))
    # req/s, out tok/s, total tok/s, TTFT mean, TTFT p99, TPOT mean, ITL p99, E2EL mean; no SLO columns
    assert row.split()[2:] == ["19.05", "3771.4", "7866.7", "41.20", "120.00", "14.10", "30.10", "2850.00", "-", "-", "-"]
    assert main(["compare", str(workload), "--schedulers", "fcfs", "--requests", "100", "--json", "--vllm-result", str(FIXTURE)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["vllm_results"][0]["p99_ttft_ms"] == 120.0 and doc["summaries"][0]["scheduler"] == "fcfs"
