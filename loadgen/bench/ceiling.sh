#!/usr/bin/env bash
# The load generator's own ceiling: `loadgen query` and wrk, one after the other, against
# `loadgen trivial-server` (which does no work), server and generator pinned to different
# cores. Both drive POST /search on C keep-alive connections from one thread for the same
# time (loadgen through a time-boxed pass), in alternating rounds; medians at the end.
#
# Usage: loadgen/bench/ceiling.sh   (env: SERVER_CPU=0 GEN_CPU=1 CONCURRENCY=4 ROUNDS=5 SECONDS_PER_RUN=3 PORT=18931)
# Needs: cargo, python3 with numpy, taskset, wrk (apt-get install wrk).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SERVER_CPU="${SERVER_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
CONCURRENCY="${CONCURRENCY:-4}"
DURATION="${SECONDS_PER_RUN:-3}"
ROUNDS="${ROUNDS:-5}"
PORT="${PORT:-18931}"

(cd "$here/.." && cargo build --release --quiet)
target="${CARGO_TARGET_DIR:-$here/../target}"
loadgen="$target/release/loadgen"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 10,000 SIFT-like queries; one pass lists 2,000,000 requests, more than fit in its time box.
python3 - "$work" <<'PY'
import sys
import numpy as np
work = sys.argv[1]
rng = np.random.default_rng(0)
q = rng.integers(0, 128, (10_000, 128)).astype("<f4")
rows = np.empty((q.shape[0], 129), dtype="<f4")
rows[:, 0] = np.array([128], dtype="<i4").view("<f4")[0]
rows[:, 1:] = q
rows.tofile(f"{work}/queries.fvecs")
np.tile(rng.permutation(10_000), 200)[None, :].astype("<u4").tofile(f"{work}/orders.u32")
PY

taskset -c "$SERVER_CPU" "$loadgen" trivial-server --port "$PORT" 2>/dev/null &
server_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

echo "trivial-server on cpu $SERVER_CPU, generator on cpu $GEN_CPU, $CONCURRENCY connections;" \
     "$(nproc) cpus: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# Alternate the two generators: this machine's throughput drifts between runs, so
# back-to-back rounds compare them under the same conditions.
for round in $(seq "$ROUNDS"); do
  taskset -c "$GEN_CPU" "$loadgen" query --addr "127.0.0.1:$PORT" --queries "$work/queries.fvecs" \
    --orders "$work/orders.u32" --passes 1 --concurrency "$CONCURRENCY" --top-k 10 --max-id 1000000 \
    --pass-time-limit-s "$DURATION" \
    --ids-out "$work/ids.i64" --dists-out "$work/dists.f32" --out "$work/stats.json"
  python3 - "$work/stats.json" "$round" <<'PY' | tee -a "$work/results.txt"
import json, sys
s = json.load(open(sys.argv[1]))
p = s["passes"][0]
lat = p["latency_ms"]
assert not s["error_counts"], s["error_counts"]
print(f"round {sys.argv[2]} loadgen: {p['qps']:>9,.0f} req/s  ({p['completed']:,} requests in {p['elapsed_s']:.2f} s,"
      f" p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms)")
PY
  taskset -c "$GEN_CPU" wrk -t1 -c"$CONCURRENCY" -d"${DURATION}s" --latency -s "$here/search.lua" \
    "http://127.0.0.1:$PORT" > "$work/wrk.txt"
  python3 - "$work/wrk.txt" "$round" "$DURATION" <<'PY' | tee -a "$work/results.txt"
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = re.search(r"(\d+) requests in", text).group(1)
p50 = re.search(r"50%\s+(\S+)", text).group(1)
p99 = re.search(r"99%\s+(\S+)", text).group(1)
bad = re.search(r"Non-2xx.*|Socket errors.*", text)
print(f"round {sys.argv[2]} wrk:     {rps:>9,.0f} req/s  ({int(total):,} requests in {sys.argv[3]} s, p50 {p50}, p99 {p99})"
      + (f" [{bad.group(0)}]" if bad else ""))
PY
done
python3 - "$work/results.txt" <<'PY'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    _, _, tool, rate = line.split()[:4]
    rates.setdefault(tool.rstrip(":"), []).append(float(rate.replace(",", "")))
lg, wrk = statistics.median(rates["loadgen"]), statistics.median(rates["wrk"])
print(f"median: loadgen {lg:,.0f} req/s, wrk {wrk:,.0f} req/s, loadgen/wrk {lg / wrk:.2f}")
PY
