#!/usr/bin/env bash
# The closed loop on one machine: calibrate the engine, build the workload from the fit, solve a
# WAIT policy for it, run WAIT, Sarathi and vLLM-v1 on the model, and simulate the same three.
#   PYTHONPATH=. bash benchmarks/gpu_loop.sh OUT_DIR        (on the GPU: llama-2-7b, cuda; calibrates here)
#   MODEL=tiny-llama DEVICE=cpu REQUESTS=30 TAG=cpu bash benchmarks/gpu_loop.sh /tmp/x --reuse-calibration docs/calibration-h200.json   (smoke test)
# By default every step runs on this machine, so no figure mixes hosts. --reuse-calibration FILE
# copies a calibration made elsewhere: a smoke test, said on stderr and in OUT_DIR/SMOKE_TEST.
# benchmarks/gpu_fidelity.py does the same loop in one process (model loaded once) at several loads.
# LOAD sets the workload's load factor (default 0.78, as the preset), SLACK the WAIT solver's slack
# (default 0.05, the solver's default); the KV capacity is always sized for WAIT at slack 0.05.
set -euo pipefail
out=${1:?usage: gpu_loop.sh OUT_DIR [--reuse-calibration FILE]}
reuse=""
if [ "${2:-}" = "--reuse-calibration" ]; then reuse=${3:?--reuse-calibration needs a calibration file}; fi
if [ -n "${CALIBRATION:-}" ]; then echo "CALIBRATION= is replaced by --reuse-calibration FILE" >&2; exit 2; fi
model=${MODEL:-llama-2-7b}
device=${DEVICE:-cuda}
requests=${REQUESTS:-2000}
tag=${TAG:-h200}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
fs() { python -m validation.cli "$@"; }
if [ -n "$reuse" ]; then
  echo "SMOKE TEST: reusing the calibration $reuse made on another run; no figure in $out is a result" >&2
  echo "calibration reused from $reuse" > "$out/SMOKE_TEST"
  cp "$reuse" "$out/calibration-$tag.json"
else fs calibrate --device "$device" --model "$model" --grid-scale "${GRID_SCALE:-1}" --out "$out/calibration-$tag.json"; fi
python benchmarks/gpu_loop_workload.py "$out/calibration-$tag.json" -o "$out/default-$tag.yaml" --load "${LOAD:-0.78}" > "$out/workload-design.json"
fs fluid "$out/default-$tag.yaml"
fs solve "$out/default-$tag.yaml" --slack "${SLACK:-0.05}" --service-rule cohort -o "$out/policy-wait-$tag.json"
for who in "wait --policy $out/policy-wait-$tag.json" "sarathi --scheduler sarathi" "vllm-v1 --scheduler vllm-v1"; do
  set -- $who
  name=$1; shift
  fs run "$out/default-$tag.yaml" "$@" --model "$model" --device "$device" --requests "$requests" --out "$out/run-$name" --json > "$out/run-$name.json"
  fs simulate "$out/default-$tag.yaml" "$@" --requests "$requests" --out "$out/sim-$name" --json > "$out/sim-$name.json"
  python -c "import json,sys; r=json.load(open(sys.argv[1])); s=json.load(open(sys.argv[2])); k=('throughput_tokens_per_s','mean_ttft_s','p99_ttft_s','p50_tbt_s','p99_tbt_s','mean_step_s','peak_kv_tokens','completed'); print(sys.argv[3], {x: (r.get(x), s.get(x)) for x in k})" "$out/run-$name.json" "$out/sim-$name.json" "$name"
done
