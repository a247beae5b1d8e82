#!/usr/bin/env bash
# Re-run every row of the README's "Measured figures" on one day, one after another, each output kept with its
# command, the date and the load average at its start (issue 35: a figure is only as true as the load it was
# measured under). Run it on a quiet machine:  bash benchmarks/rerun_readme.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/$(date +%F)}
mkdir -p "$out"
run() {  # name, then the command
  local name=$1; shift
  { echo "# command: $*"; echo "# date: $(date -u '+%F %T UTC')"; echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"; } > "$out/$name.txt"
  local t0=$SECONDS
  "$@" >> "$out/$name.txt" 2>&1
  echo "# exit: $?  wall: $((SECONDS - t0)) s  load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/$name.txt"
  tail -n 4 "$out/$name.txt"
}
run zoo_w16 python benchmarks/bench_zoo.py --widths 16
run zoo_w128 python benchmarks/bench_zoo.py --widths 128 --epochs 1
run barrier_mlp16 python benchmarks/bench_barrier.py --model mlp --width 16 --train 10000 --test 10000 --repeats 3
run barrier_mlp128 python benchmarks/bench_barrier.py --model mlp --width 128 --train 5000 --test 5000 --repeats 3
run barrier_resnet20 python benchmarks/bench_barrier.py
run wm_mlp512 python benchmarks/bench_weight_matching.py --models mlp512 --seeds 0 1 2
run wm_resnet18 python benchmarks/bench_weight_matching.py --seeds 0 1 2
run star_step python benchmarks/bench_star_step.py --steps 10 --repeats 3
run executor python benchmarks/bench_executor.py
run loader python benchmarks/bench_loader.py
run loader_stream python benchmarks/bench_loader.py --n 2000 --workers 2 --epochs 1 --stream-images 256 --stream-workers 0 2 --batch-size 64
run gpu_cpu_smoke python benchmarks/bench_gpu.py --device cpu --n 512 --width 0.125 --epochs 2 --workers 2 --threads 2
