"""Every bad input to every command: exit 2 (or 3 for a workload that cannot be served), one
message naming the file / field / value and what to do, no traceback, and no output left behind.

Cases are built as (bad file) × (every command that reads that kind of file), plus flag values per
command. Each runs the real CLI in-process in a fresh folder and compares the folder's files
before and after: a failed command must not have written or changed anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fluid.errors import EXIT_BAD_INPUT, EXIT_UNSTABLE
from validation.cli import main

WORKLOAD = """\
name: tiny
kv_capacity_tokens: 20000
batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}
types:
  - {name: short, prefill: 20, decode: 10, rate_per_s: 20.0}
  - {name: long, prefill: 40, decode: 30, rate_per_s: 10.0}
"""
TRACE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.1+00:00,20,10\n2024-05-10 00:00:01.2+00:00,40,30\n"


def _replace(old: str, new: str):
    return lambda text: text.replace(old, new, 1)


# name -> (how to make the workload file's bytes from the good text, a fragment the message must hold)
BAD_WORKLOADS = {
    "latin1": (lambda t: t.encode("utf-8").replace(b"tiny", b"t\xe9"), "not UTF-8"),
    "deep-flow": (lambda t: t + "extra: " + "[" * 3000 + "]" * 3000 + "\n", "nests more than"),
    "deep-block": (lambda t: t + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n", "nests more than"),
    "dup-top": (lambda t: t + "name: other\n", "'name' appears twice"),
    "dup-type": (_replace("prefill: 20,", "prefill: 20, prefill: 21,"), "'prefill' appears twice"),
    "coef-1e308": (_replace("d0_s: 0.01", "d0_s: 1e308"), "batch_time.d0_s"),
    "coef-inf": (_replace("d0_s: 0.01", "d0_s: .inf"), "batch_time.d0_s"),
    "coef-neg": (_replace("d1_s_per_token: 1.0e-6", "d1_s_per_token: -1.0e-6"), "batch_time.d1_s_per_token"),
    "coef-str": (_replace("d0_s: 0.01", "d0_s: fast"), "batch_time.d0_s"),
    "capacity-huge-int": (_replace("20000", "1" + "0" * 30), "kv_capacity_tokens"),
    "capacity-zero": (_replace("20000", "0"), "kv_capacity_tokens"),
    "capacity-float": (_replace("20000", "20000.5"), "kv_capacity_tokens"),
    "prefill-huge-int": (_replace("prefill: 20", "prefill: 1" + "0" * 25), "types[0].prefill"),
    "prefill-float": (_replace("prefill: 20", "prefill: 20.5"), "types[0].prefill"),
    "prefill-bool": (_replace("prefill: 20", "prefill: true"), "types[0].prefill"),
    "decode-zero": (_replace("decode: 10", "decode: 0"), "types[0].decode"),
    "rate-1e300": (_replace("rate_per_s: 20.0", "rate_per_s: 1e300"), "types[0].rate_per_s"),
    "rate-nan": (_replace("rate_per_s: 20.0", "rate_per_s: .nan"), "types[0].rate_per_s"),
    "rate-inf": (_replace("rate_per_s: 20.0", "rate_per_s: .inf"), "types[0].rate_per_s"),
    "rate-neg": (_replace("rate_per_s: 20.0", "rate_per_s: -20.0"), "types[0].rate_per_s"),
    "slo-zero": (_replace("rate_per_s: 20.0}", "rate_per_s: 20.0, tbt_slo_s: 0}"), "types[0].tbt_slo_s"),
    "gamma-cv-tiny": (lambda t: t + "arrivals: {kind: gamma, cv: 1.0e-300}\n", "arrivals.cv"),
    "gamma-cv-near-0": (lambda t: t + "arrivals: {kind: gamma, cv: 1.0e-6}\n", "arrivals.cv"),
    "gamma-cv-huge": (lambda t: t + "arrivals: {kind: gamma, cv: 1.0e+300}\n", "arrivals.cv"),
    "gamma-cv-1e5": (lambda t: t + "arrivals: {kind: gamma, cv: 1.0e+5}\n", "arrivals.cv"),
    "arrival-kind": (lambda t: t + "arrivals: {kind: poison}\n", "arrivals.kind"),
    "unknown-key": (lambda t: t + "capacity: 3\n", "unknown key 'capacity'"),
    "no-batch-time": (lambda t: t.replace("batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}\n", ""), "batch_time"),
    "batch-kind": (_replace("kind: affine", "kind: cubic"), "batch_time.kind"),
    "types-empty": (lambda t: t.split("types:")[0] + "types: []\n", "types"),
    "type-name-empty": (_replace("name: short", "name: ''"), "types[0].name"),
    "syntax": (lambda t: t + "  - {name: broken\n", "not valid YAML"),
    "empty": (lambda t: "", "empty"),
    "a-list": (lambda t: "- 1\n- 2\n", "mapping"),
    "trace-missing": (lambda t: t + "arrivals: {kind: trace, trace: nowhere.csv}\n", "arrivals.trace"),
    "trace-nan": (lambda t: t + "arrivals: {kind: trace, trace: nan_trace.csv}\n", "nan_trace.csv:3"),
    "trace-latin1": (lambda t: t + "arrivals: {kind: trace, trace: latin_trace.csv}\n", "not UTF-8"),
    "trace-columns": (lambda t: t + "arrivals: {kind: trace, trace: cols_trace.csv}\n", "unknown trace columns"),
    "profile-latin1": (_replace("{kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}", "{kind: profile, mlp_csv: latin_mlp.csv, num_layers: 2}"),
                       "latin_mlp.csv:2: the profile is not UTF-8"),
    "profile-missing": (_replace("{kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}", "{kind: profile, mlp_csv: nowhere_mlp.csv, num_layers: 2}"),
                        "nowhere_mlp.csv"),
}
# commands that read a workload: argv with {w} for the file and {out} for an output path
WORKLOAD_COMMANDS = {
    "fluid": ["fluid", "{w}"],
    "solve": ["solve", "{w}", "-o", "{out}/p.json"],
    "simulate": ["simulate", "{w}", "--scheduler", "fcfs", "--requests", "50", "--out", "{out}"],
    "compare": ["compare", "{w}", "--schedulers", "fcfs,vllm-v1", "--requests", "50", "--out", "{out}"],
    "run": ["run", "{w}", "--scheduler", "fcfs", "--device", "cpu", "--model", "tiny-llama", "--requests", "5", "--out", "{out}"],
    "check": ["check", "{policy}", "{w}"],
    "demo": ["demo", "--workload", "{w}", "--requests", "50", "--out", "{out}"],
}
# the trace errors only bite where arrivals are generated
TRACE_CASES = {"trace-nan", "trace-latin1", "trace-columns"}
ARRIVAL_COMMANDS = {"simulate", "compare", "run"}

BAD_POLICIES = {
    # one Latin-1 byte in an otherwise UTF-8 file (the policy's notes hold non-Latin-1 text)
    "latin1": (lambda t: t.encode("utf-8").replace(b'"tiny"', b'"t\xe9"'), "not UTF-8"),
    "deep": (lambda t: t[:-2] + ', "x": ' + "[" * 3000 + "]" * 3000 + "}\n", "nests more than"),
    "dup-key": (lambda t: t.replace('"policy": "wait",', '"policy": "wait", "policy": "wait",', 1), "'policy' appears twice"),
    "nan": (lambda t: re.sub(r'"load_factor": [0-9.e-]+', '"load_factor": NaN', t, count=1), "NaN"),
    "infinity": (lambda t: t.replace('"kv_capacity_tokens": 20000', '"kv_capacity_tokens": Infinity', 1), "Infinity"),
    "truncated": (lambda t: t[: len(t) // 2], "not valid JSON"),
    "a-list": (lambda t: "[1, 2]\n", "object"),
    "empty": (lambda t: "", "not valid JSON"),
    "schema": (lambda t: re.sub(r'"schema_version": \d+', '"schema_version": 99', t, count=1), "schema_version"),
    "bt-kind": (lambda t: t.replace('"kind": "affine"', '"kind": "cubic"', 1), "batch_time"),
    "bt-negative": (lambda t: t.replace('"d0_s": 0.01', '"d0_s": -0.01', 1), "batch_time.d0_s"),
    "bt-string": (lambda t: t.replace('"d0_s": 0.01', '"d0_s": "0.01"', 1), "batch_time.d0_s"),
    "bt-huge": (lambda t: t.replace('"d0_s": 0.01', '"d0_s": 1e308', 1), "batch_time.d0_s"),
    "bt-unknown-key": (lambda t: t.replace('"d0_s": 0.01', '"d0_s": 0.01, "d9_s": 1', 1), "batch_time"),
}
POLICY_COMMANDS = {
    "show": ["show", "{p}"],
    "show-json": ["show", "{p}", "--json"],
    "check": ["check", "{p}"],
    "check-workload": ["check", "{p}", "{w}"],
    "simulate": ["simulate", "{w}", "--policy", "{p}", "--requests", "50", "--out", "{out}"],
    "compare": ["compare", "{w}", "--schedulers", "wait,fcfs", "--policy", "{p}", "--requests", "50", "--out", "{out}"],
    "run": ["run", "{w}", "--policy", "{p}", "--device", "cpu", "--model", "tiny-llama", "--requests", "5", "--out", "{out}"],
}
# every command reads a policy through the same checks
RUNTIME_SKIPS: set[str] = set()  # one reader for every command (thresholds.policy)

SIM = ["{w}", "--scheduler", "fcfs", "--requests", "50", "--out", "{out}"]
# flags shared by simulate and compare (compare gets --schedulers instead of --scheduler)
COMMON_FLAGS = {
    "seed-negative": (["--seed", "-1"], "seed"),
    "seed-huge": (["--seed", str(2**70)], "seed"),
    "block-size-zero": (["--block-size", "0"], "block_size"),
    "block-size-negative": (["--block-size", "-16"], "block_size"),
    "block-size-over-capacity": (["--block-size", "30000"], "block_size"),
    "ttft-negative": (["--ttft-slo", "-1"], "ttft_slo"),
    "ttft-nan": (["--ttft-slo", "nan"], "ttft_slo"),
    "ttft-inf": (["--ttft-slo", "inf"], "ttft_slo"),
    "ttft-zero": (["--ttft-slo", "0"], "ttft_slo"),
    "requests-zero": (["--requests", "0"], "requests"),
    "requests-negative": (["--requests", "-5"], "requests"),
    "rate-nan": (["--rate-scale", "nan"], "rate_scale"),
    "rate-zero": (["--rate-scale", "0"], "rate_scale"),
    "rate-inf": (["--rate-scale", "inf"], "rate"),
    "warmup-one": (["--warmup", "1"], "warmup"),
    "warmup-negative": (["--warmup", "-0.1"], "warmup"),
    "warmup-nan": (["--warmup", "nan"], "warmup"),
    "horizon-negative": (["--horizon", "-1"], "horizon"),
    "horizon-nan": (["--horizon", "nan"], "horizon"),
    "replicas-zero": (["--replicas", "0"], "replicas"),
    "router-unknown": (["--router", "nearest"], "router"),
    "split-without-router": (["--split", "{split_ok}"], "--router split"),
    "split-strings": (["--router", "split", "--replicas", "2", "--split", "{split_str}"], "split.short"),
    "split-not-json": (["--router", "split", "--split", "{split_bad}"], "not valid JSON"),
    "split-missing": (["--router", "split", "--split", "nowhere.json"], "nowhere.json"),
    "split-latin1": (["--router", "split", "--split", "{split_latin}"], "not UTF-8"),
    "split-sum": (["--router", "split", "--replicas", "2", "--split", "{split_sum}"], "summing to 1"),
    "tiers-empty": (["--tiers", ""], "tiers"),
    "tiers-sum": (["--tiers", "0.5:0.1,0.2:0.5"], "sum to 1"),
    "tiers-syntax": (["--tiers", "half:0.1"], "tiers"),
    "tiers-negative": (["--tiers", "1.0:-0.1"], "tiers"),
    "option-syntax": (["--option", "chunk_size"], "KEY=VALUE"),
    "option-unknown": (["--option", "nonsense=1"], "nonsense"),
    "out-is-file": (["--out", "{afile}"], "is a file"),
    "out-under-proc": (["--out", "/proc/fluidsched-out"], "cannot write under /proc"),
    "out-under-file": (["--out", "{afile}/sub"], "is a file"),
    "out-foreign-folder": (["--out", "{foreign}"], "not a fluidsched output"),
    "policy-missing": (["--policy", "nowhere.json"], "nowhere.json"),
    "workload-missing": ([], "no such workload file"),
}
COMPARE_ONLY = {
    "vllm-result-missing": (["--vllm-result", "nowhere.json"], "nowhere.json"),
    "vllm-result-not-vllm": (["--vllm-result", "{split_ok}"], "missing duration"),
    "vllm-result-latin1": (["--vllm-result", "{split_latin}"], "not UTF-8"),
    "scheduler-twice": (["--schedulers", "fcfs,vllm-v1,fcfs"], "named more than once"),
    "scheduler-unknown": (["--schedulers", "fcfs,vlm"], "vlm"),
    "schedulers-empty": (["--schedulers", ","], "at least one scheduler"),
    "wait-without-policy": (["--schedulers", "wait"], "policy"),
}
SIMULATE_ONLY = {
    "scheduler-unknown": (["--scheduler", "vlm"], "vlm"),
    "no-scheduler": (["--scheduler", None], "--scheduler"),
    "wait-without-policy": (["--scheduler", "wait"], "policy"),
}
RUN_BASE = ["{w}", "--scheduler", "fcfs", "--device", "cpu", "--model", "tiny-llama", "--requests", "5", "--out", "{out}"]
RUN_FLAGS = {
    "block-size-zero": (["--block-size", "0"], "block_size"),
    "block-size-negative": (["--block-size", "-1"], "block_size"),
    "kv-tokens-zero": (["--kv-tokens", "0"], "kv_tokens"),
    "kv-tokens-too-small": (["--kv-tokens", "40"], "kv_tokens"),
    "seed-negative": (["--seed", "-3"], "seed"),
    "ttft-negative": (["--ttft-slo", "-1"], "ttft_slo"),
    "ttft-nan": (["--ttft-slo", "nan"], "ttft_slo"),
    "requests-zero": (["--requests", "0"], "requests"),
    "rate-nan": (["--rate-scale", "nan"], "rate"),
    "warmup-one": (["--warmup", "1"], "warmup"),
    "horizon-negative": (["--horizon", "-2"], "horizon"),
    "device": (["--device", "tpu"], "device"),
    "dtype": (["--dtype", "fp8"], "dtype"),
    "model-unknown": (["--model", "gpt-5"], "gpt-5"),
    "model-missing-json": (["--model", "nowhere/config.json"], "nowhere"),
    "model-too-big-for-host": (["--model", "llama-2-13b"], "host memory"),
    "checkpoint-missing": (["--checkpoint", "nowhere"], "nowhere"),
    "out-is-file": (["--out", "{afile}"], "is a file"),
    "out-under-proc": (["--out", "/proc/fluidsched-out"], "/proc"),
    "option-syntax": (["--option", "x"], "KEY=VALUE"),
    "no-scheduler": (["--scheduler", None], "scheduler"),
    "policy-kv-mismatch": (["--policy", "{policy}", "--scheduler", None, "--kv-tokens", "30000"], "C is 20000 tokens in the policy, 30000 in the run"),
    "overlap-slai": (["--scheduler", "slai", "--overlap-host", True], "--overlap-host: slai decides on step end times"),
}
CALIBRATE_BASE = ["--device", "cpu", "--model", "tiny-llama", "--out", "{out}/cal.json"]
CALIBRATE_FLAGS = {
    "block-size-zero": (["--block-size", "0"], "block_size"),
    "block-size-negative": (["--block-size", "-4"], "block_size"),
    "repeats-zero": (["--repeats", "0"], "repeats"),
    "grid-scale-zero": (["--grid-scale", "0"], "grid_scale"),
    "grid-scale-nan": (["--grid-scale", "nan"], "grid_scale"),
    "grid-scale-big": (["--grid-scale", "2"], "grid_scale"),
    "kv-tokens-small": (["--kv-tokens", "3"], "kv_tokens"),
    "device": (["--device", "tpu"], "device"),
    "dtype": (["--dtype", "int4"], "dtype"),
    "model-unknown": (["--model", "gpt-5"], "gpt-5"),
    "model-too-big-for-host": (["--model", "llama-2-13b", "--kv-tokens", "1000000"], "host memory"),
    "out-is-folder": (["--out", "{foreign}"], "is a folder"),
    "out-under-proc": (["--out", "/proc/fluidsched/cal.json"], "/proc"),
    "out-under-file": (["--out", "{afile}/cal.json"], "is a file"),
}
FLUID_FLAGS = {
    "rate-nan": (["--rate-scale", "nan"], "rate-scale"),
    "rate-negative": (["--rate-scale", "-1"], "rate-scale"),
    "ode-negative": (["--ode", "-5"], "ode"),
    "ode-nan": (["--ode", "nan"], "ode"),
    "preset-unknown": ([], "valid presets"),
    "request-cannot-fit": ([], "can never be served"),
}
SOLVE_FLAGS = {
    "out-is-folder": (["-o", "{foreign}"], "is a folder"),
    "out-under-proc": (["-o", "/proc/fluidsched/p.json"], "/proc"),
    "out-under-file": (["-o", "{afile}/p.json"], "is a file"),
}
DEMO_FLAGS = {
    "out-is-file": (["--out", "{afile}"], "is a file"),
    "out-under-proc": (["--out", "/proc/fluidsched-demo"], "/proc"),
    "out-foreign-folder": (["--out", "{foreign}"], "not a fluidsched output"),
    "requests-zero": (["--requests", "0"], "requests"),
    "seed-negative": (["--seed", "-1"], "seed"),
    "workload-unknown": (["--workload", "defualt"], "valid presets"),
}
CHECK_FLAGS = {
    "rate-zero": (["--rate-scale", "0"], "rate"),
    "rate-nan": (["--rate-scale", "nan"], "rate"),
    "policy-missing": ([], "nowhere.json"),
    "policy-folder": ([], "is a folder"),
}
DEMO_JSON = {
    "not-json": ("{bad", "not valid JSON"),
    "a-list": ("[]", "JSON object"),
    "no-fluid": (json.dumps({"summaries": [{"scheduler": "x"}]}), "field 'fluid'"),
    "fluid-string": (json.dumps({"fluid": {"throughput_star_tokens_per_s": "fast", "kv_capacity_tokens": 1}, "summaries": [{"scheduler": "x"}]}),
                     "fluid.throughput_star_tokens_per_s"),
    "no-summaries": (json.dumps({"fluid": {"throughput_star_tokens_per_s": 1, "kv_capacity_tokens": 1}}), "summaries"),
    "summary-no-name": (json.dumps({"fluid": {"throughput_star_tokens_per_s": 1, "kv_capacity_tokens": 1}, "summaries": [{}]}),
                        "summaries[0]"),
    "summary-bad-number": (json.dumps({"fluid": {"throughput_star_tokens_per_s": 1, "kv_capacity_tokens": 1},
                                       "summaries": [{"scheduler": "x", "mean_ttft_s": "slow"}]}), "summaries[0].mean_ttft_s"),
    "nan": ('{"fluid": {"throughput_star_tokens_per_s": NaN, "kv_capacity_tokens": 1}, "summaries": []}', "NaN"),
    "latin1": (b'{"workload": "t\xe9"}', "not UTF-8"),
    "dup": ('{"fluid": 1, "fluid": 2}', "appears twice"),
}


GOOD_DEMO_JSON = json.dumps({"fluid": {"throughput_star_tokens_per_s": 1.0, "kv_capacity_tokens": 1},
                             "summaries": [{"scheduler": "fcfs"}]})
FIGURES_FLAGS = {  # argv after `figures`
    "out-is-file": (["results", "--out", "{afile}"], "is a file"),
    "out-under-proc": (["results", "--out", "/proc/fluidsched-figs"], "/proc"),
    "results-missing": (["nowhere", "--out", "figs"], "no such results folder"),
    "results-is-file": (["afile"], "no such results folder"),
}


def _changes(make, text: str):
    out = make(text)
    assert out != text, "the bad-input recipe did not change the file"
    return out


def _cases():
    cases = []
    for bad in BAD_WORKLOADS:
        for cmd in WORKLOAD_COMMANDS:
            if bad in TRACE_CASES and cmd not in ARRIVAL_COMMANDS:
                continue
            cases.append(pytest.param("workload", bad, cmd, id=f"workload-{bad}-{cmd}"))
    for bad in BAD_POLICIES:
        for cmd in POLICY_COMMANDS:
            if bad in RUNTIME_SKIPS and cmd in ("simulate", "compare", "run"):
                continue
            cases.append(pytest.param("policy", bad, cmd, id=f"policy-{bad}-{cmd}"))
    for cmd in ("simulate", "compare"):
        for name in list(COMMON_FLAGS) + list(COMPARE_ONLY if cmd == "compare" else SIMULATE_ONLY):
            cases.append(pytest.param("flag", name, cmd, id=f"flag-{cmd}-{name}"))
    for name in RUN_FLAGS:
        cases.append(pytest.param("flag", name, "run", id=f"flag-run-{name}"))
    for name in CALIBRATE_FLAGS:
        cases.append(pytest.param("flag", name, "calibrate", id=f"flag-calibrate-{name}"))
    for name in FLUID_FLAGS:
        cases.append(pytest.param("flag", name, "fluid", id=f"flag-fluid-{name}"))
    for name in SOLVE_FLAGS:
        cases.append(pytest.param("flag", name, "solve", id=f"flag-solve-{name}"))
    for name in DEMO_FLAGS:
        cases.append(pytest.param("flag", name, "demo", id=f"flag-demo-{name}"))
    for name in CHECK_FLAGS:
        cases.append(pytest.param("flag", name, "check", id=f"flag-check-{name}"))
    for name in list(DEMO_JSON) + list(FIGURES_FLAGS):
        cases.append(pytest.param("figures", name, "figures", id=f"figures-{name}"))
    return cases


@pytest.fixture(scope="module")
def good_policy_text(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    (folder / "w.yaml").write_text(WORKLOAD, encoding="utf-8")
    assert main(["solve", str(folder / "w.yaml"), "-o", str(folder / "p.json")]) == 0
    return (folder / "p.json").read_text(encoding="utf-8")


def _setup(root: Path, policy_text: str) -> dict:
    (root / "w.yaml").write_text(WORKLOAD, encoding="utf-8")
    (root / "good_policy.json").write_text(policy_text, encoding="utf-8")
    (root / "nan_trace.csv").write_text(TRACE.replace("2024-05-10 00:00:01.2+00:00", "nan"), encoding="utf-8")
    (root / "latin_trace.csv").write_bytes(TRACE.replace("ContextTokens", "ContextTokéns").encode("latin-1"))
    (root / "cols_trace.csv").write_text("when,in,out\n1,2,3\n", encoding="utf-8")
    (root / "latin_mlp.csv").write_bytes("num_tokens,time_stats.mlp.median\n16,0.1 \xb5s\n".encode("latin-1"))
    (root / "split_ok.json").write_text(json.dumps({"short": [1.0], "long": [1.0]}), encoding="utf-8")
    (root / "split_str.json").write_text(json.dumps({"short": ["a", 0.5], "long": [0.5, 0.5]}), encoding="utf-8")
    (root / "split_sum.json").write_text(json.dumps({"short": [0.7, 0.7], "long": [0.5, 0.5]}), encoding="utf-8")
    (root / "split_bad.json").write_text("{short: 1}", encoding="utf-8")
    (root / "split_latin.json").write_bytes('{"short": [1.0], "lóng": [1.0]}'.encode("latin-1"))
    (root / "afile").write_text("not a folder\n", encoding="utf-8")
    (root / "foreign").mkdir()
    (root / "foreign" / "thesis.tex").write_text("precious\n", encoding="utf-8")
    (root / "results").mkdir()
    return {
        "w": "w.yaml", "out": "out", "policy": "good_policy.json", "p": "good_policy.json", "afile": "afile",
        "foreign": "foreign", "split_ok": "split_ok.json", "split_str": "split_str.json", "split_sum": "split_sum.json",
        "split_bad": "split_bad.json", "split_latin": "split_latin.json",
    }


def _fill(argv, names):
    return [a.format(**names) for a in argv]


def _with_flag(base: list[str], extra: list) -> list[str]:
    """`base` with each FLAG VALUE pair of `extra` set (replacing it when present; None drops it,
    True adds the bare switch)."""
    argv = list(base)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
        if value is True:
            argv.append(flag)
        elif value is not None:
            argv += [flag, value]
    return argv


def _argv(kind: str, name: str, cmd: str, root: Path, names: dict, policy_text: str) -> tuple[list[str], str]:
    if kind == "workload":
        make, fragment = BAD_WORKLOADS[name]
        data = _changes(make, WORKLOAD)
        path = root / "bad.yaml"
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return _fill(WORKLOAD_COMMANDS[cmd], {**names, "w": "bad.yaml"}), fragment
    if kind == "policy":
        make, fragment = BAD_POLICIES[name]
        data = _changes(make, policy_text)
        (root / "bad.json").write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return _fill(POLICY_COMMANDS[cmd], {**names, "p": "bad.json"}), fragment
    if kind == "figures":
        if name in FIGURES_FLAGS:
            (root / "results" / "demo.json").write_text(GOOD_DEMO_JSON, encoding="utf-8")
            extra, fragment = FIGURES_FLAGS[name]
            return ["figures"] + _fill(extra, names), fragment
        text, fragment = DEMO_JSON[name]
        (root / "results" / "demo.json").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return ["figures", "results", "--out", "figs"], fragment
    if cmd in ("simulate", "compare"):
        table = {**COMMON_FLAGS, **(COMPARE_ONLY if cmd == "compare" else SIMULATE_ONLY)}
        extra, fragment = table[name]
        base = list(SIM)
        if cmd == "compare":
            base[1:3] = ["--schedulers", "fcfs,vllm-v1"]
        if name == "workload-missing":
            base[0] = "nowhere.yaml"
        return [cmd] + _fill(_with_flag(base, extra), names), fragment
    if cmd == "run":
        extra, fragment = RUN_FLAGS[name]
        return ["run"] + _fill(_with_flag(RUN_BASE, extra), names), fragment
    if cmd == "calibrate":
        extra, fragment = CALIBRATE_FLAGS[name]
        return ["calibrate"] + _fill(_with_flag(CALIBRATE_BASE, extra), names), fragment
    if cmd == "fluid":
        extra, fragment = FLUID_FLAGS[name]
        target = "w.yaml"
        if name == "preset-unknown":
            target = "defualt"
        if name == "request-cannot-fit":
            (root / "big.yaml").write_text(WORKLOAD + "  - {name: huge, prefill: 30000, decode: 10, rate_per_s: 0.001}\n",
                                           encoding="utf-8")
            target = "big.yaml"
        return ["fluid", target] + extra, fragment
    if cmd == "solve":
        extra, fragment = SOLVE_FLAGS[name]
        return ["solve", "w.yaml"] + _fill(extra, names), fragment
    if cmd == "demo":
        extra, fragment = DEMO_FLAGS[name]
        return ["demo"] + _fill(_with_flag(["--workload", "w.yaml", "--requests", "50", "--out", "out"], extra), names), fragment
    if cmd == "check":
        extra, fragment = CHECK_FLAGS[name]
        policy = {"policy-missing": "nowhere.json", "policy-folder": "results"}.get(name, "good_policy.json")
        return ["check", policy] + extra, fragment
    raise AssertionError(cmd)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind, name, cmd", _cases())
def test_bad_input_is_refused_cleanly(kind, name, cmd, tmp_path, monkeypatch, capsys, good_policy_text):
    monkeypatch.chdir(tmp_path)
    if "host" in name:  # the same answer whatever this machine's memory: 8 GiB available
        monkeypatch.setattr("runtime.gpu.setup.available_host_bytes", lambda: 8 * 2**30)
    names = _setup(tmp_path, good_policy_text)
    argv, fragment = _argv(kind, name, cmd, tmp_path, names, good_policy_text)
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (2, 3), f"{argv} exited {code}: {err}"
    assert f"fluidsched {argv[0]}: error: " in err and "Traceback" not in err
    assert fragment in err, f"{argv}: message lacks {fragment!r}: {err}"
    after = _snapshot(tmp_path)
    assert after == before, f"{argv} left files behind or changed them: {sorted(set(after) ^ set(before))}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "figs").exists()


def test_there_are_at_least_300_cases():
    assert len(_cases()) >= 300


def test_exit_codes_are_the_documented_numbers():
    # scripts tell a bad input (2) from an unstable workload (3) by number (fluid/errors.py, README):
    # the tests above compare with the constants, so the numbers themselves are pinned here
    assert (EXIT_BAD_INPUT, EXIT_UNSTABLE) == (2, 3)
    assert main(["fluid", "no-such-preset-xyz"]) == 2


def test_each_error_class_carries_its_documented_exit_status():
    # the CLI exits with the error's `exit_code`: 2 for a bad input and a missing optional package
    # (the user fixes the command), 3 for an unstable workload and a solver that found no optimum,
    # 1 for any other error of the toolkit
    from fluid import errors as e

    classes = (e.InputError, e.MissingDependencyError, e.UnstableWorkloadError, e.SolverError, e.FluidSchedError)
    codes = [cls("x").exit_code for cls in classes]
    assert codes == [2, 2, 3, 3, 1]
