#!/usr/bin/env bash
# Simulator speed before and after a change, interleaved on one machine (A B A B A B), so that the
# machine's drift hits both sides alike; compare the medians of the per-policy times it prints.
#   bash benchmarks/bench_sim_ab.sh BASE_COMMIT [ROUNDS]      (from the repository root)
# BASE_COMMIT is unpacked into a temporary folder; the working tree is the "after" side.
# Outputs go to a temporary folder (never to docs/); the last lines are the table of medians.
set -euo pipefail
base=${1:?usage: bench_sim_ab.sh BASE_COMMIT [ROUNDS]}
rounds=${2:-3}
root=$(pwd)
work=$(mktemp -d)
git archive "$base" | tar -x -C "$work/" 
mkdir -p "$work/out"
for r in $(seq 1 "$rounds"); do
  for side in A B; do
    dir=$root; [ "$side" = A ] && dir=$work
    (cd "$dir" && PYTHONPATH=. python benchmarks/bench_sim.py --requests 10000 --repeats 3 --only wait,nested-wait,rad,vllm-v1 \
        --out "$work/out/$side$r.md" --label "r$r" > "$work/out/$side$r.log" 2>&1)
    echo "$side$r done ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
  done
done
python - "$work/out" "$base" <<'PY'
import re, statistics, sys
from pathlib import Path
out, base = Path(sys.argv[1]), sys.argv[2]
times = {}
for log in sorted(out.glob("*.log")):
    for line in log.read_text().splitlines():
        m = re.match(r"^(\S+)\s+([0-9.]+) s\s+\d+ request-steps", line)
        if m:
            times.setdefault((log.name[0], m.group(1)), []).append(float(m.group(2)))
print(f"| policy | before ({base}) | after | change |\n| --- | ---: | ---: | ---: |")
for name in sorted({k[1] for k in times}):
    a, b = statistics.median(times[("A", name)]), statistics.median(times[("B", name)])
    print(f"| {name} | {a:.2f} s | {b:.2f} s | {100 * (b / a - 1):+.1f} % |")
PY
rm -rf "$work"
