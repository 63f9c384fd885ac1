#!/usr/bin/env bash
# One-shot GPU benchmark: the 256 px paper config (configs/default.py) training step in
# bfloat16, fsjax (JAX) against the PyTorch reference, same batch, same GPU, one call.
#
#   OUT=/tmp/gpu_bench BATCH=32 STEPS=10 LIMIT_S=540 bash scripts/gpu_bench.sh
#
# Runs, in order of importance, each only while LIMIT_S leaves time for it (RUNS picks):
#   A  JAX at BATCH with a profile, then PyTorch eager (NCHW)          -> bench.json
#   E  JAX at BATCH with config.model.aad_merge_attr_convs=True (one   -> bench_merged.json
#      attribute conv per ResBlk; roofline bound 22.5 -> 20.1 ms on an H100, unmeasured)
#   B  JAX at BATCH2 (default 2 x BATCH; largest-batch MFU)             -> bench_b2.json
#   C  JAX at BATCH from the package in BASE_DIR, if set (an earlier    -> bench_base.json
#      fsjax, e.g. `git archive HEAD~1 fsjax | tar -x -C build/fsjax_base`), to measure a
#      change on the same card
#   D  PyTorch under torch.compile at BATCH (default mode)             -> torch_compile.json
# then prints a table of every figure and the profile's top ops.
#
# Runs from the repository root with the machine's python3 (JAX with CUDA, PyTorch with
# CUDA). Pure-Python packages that machine lacks (ml_collections, clu) are installed from
# build/gpu_bench_wheels/ when that folder exists (made on a machine with internet by:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     -d build/gpu_bench_wheels clu==0.0.12 ml_collections==1.1.0).
# Each result file is rewritten after every measurement, so a run cut by a time limit
# keeps what it finished. Test it on CPU with:
#   CONFIG=configs/tiny.py DTYPE=float32 BATCH=2 STEPS=2 LIMIT_S=900 bash scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_bench}
CONFIG=${CONFIG:-configs/default.py}
DTYPE=${DTYPE:-bfloat16}
BATCH=${BATCH:-32}
BATCH2=${BATCH2:-$(( 2 * BATCH ))}
STEPS=${STEPS:-10}
LIMIT_S=${LIMIT_S:-540}
BASE_DIR=${BASE_DIR:-}
RUNS=${RUNS:-AEBCD}  # which of the runs below to do, e.g. RUNS=D for torch.compile alone
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in one process: allocate on demand, not 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
start=$(date +%s)

if [ -d build/gpu_bench_wheels ] && ! $PY -c 'import clu, ml_collections' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/fsjax_site build/gpu_bench_wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/fsjax_site${PYTHONPATH:+:$PYTHONPATH}
fi
SITE=${PYTHONPATH:-}
export PYTHONPATH=$PWD${SITE:+:$SITE}

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>/dev/null || echo 'no nvidia-smi'
  nproc; uptime
  $PY -c 'import jax, flax, optax, torch
print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__,
      "torch", torch.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/env.txt"

left() { echo $(( LIMIT_S - ($(date +%s) - start) - 10 )); }
# bench NAME NEED_S DIR ARGS...: one `fsjax bench` run with the fsjax package of DIR (run
# from DIR, since `python -m` puts the working directory first), if NEED_S seconds are left.
ROOT=$PWD
bench() {
  local name=$1 need=$2 dir=$3
  shift 3
  [[ $RUNS == *$name* ]] || return 0
  if [ "$(left)" -lt "$need" ]; then
    echo "$name: skipped, $(left) s left"
    return
  fi
  (cd "$dir" && PYTHONPATH=$dir${SITE:+:$SITE} timeout --signal=TERM --kill-after=10 "$(left)" \
    $PY -m fsjax.main bench --config "$ROOT/$CONFIG" --mode train --config.model.dtype="$DTYPE" \
      --steps "$STEPS" --warmup 3 "$@") > "$OUT/log_$name.txt" 2>&1
  echo "$name: exit code $? after $(( $(date +%s) - start )) s"
  grep -E 'Error|error:' "$OUT/log_$name.txt" | tail -n 3
}
bench A 0 "$ROOT" --config.per_device_batch_size="$BATCH" --compare_torch \
  --profile_dir /tmp/fsjax_profile --json "$OUT/bench.json"
bench E 150 "$ROOT" --config.per_device_batch_size="$BATCH" \
  --config.model.aad_merge_attr_convs=True --json "$OUT/bench_merged.json"
bench B 150 "$ROOT" --config.per_device_batch_size="$BATCH2" --json "$OUT/bench_b2.json"
if [ -n "$BASE_DIR" ]; then
  bench C 150 "$ROOT/$BASE_DIR" --config.per_device_batch_size="$BATCH" \
    --json "$OUT/bench_base.json"
fi
if [[ $RUNS == *D* ]] && [ "$(left)" -gt 90 ]; then
  timeout --signal=TERM --kill-after=10 "$(left)" $PY - "$CONFIG" "$DTYPE" "$BATCH" "$STEPS" \
      "$OUT/torch_compile.json" > "$OUT/log_D.txt" 2>&1 <<'EOF'
import json, sys
from fsjax.bench import torch_baseline as bench_torch
from fsjax.bench import train as bench
from fsjax.train import config_files
path, dtype, batch, steps, out = sys.argv[1:]
config = bench.bench_config(config_files.load(path), dtype=dtype, per_device_batch_size=int(batch))
r = bench_torch.bench_train_torch(config, batch_size=int(batch), steps=int(steps), warmup=3,
                                  variant='compile')
json.dump({'results': [r]}, open(out, 'w'), indent=1, default=str)
EOF
  echo "D: exit code $? after $(( $(date +%s) - start )) s"
  tail -n 3 "$OUT/log_D.txt"
fi

# Every figure, side by side, and the profile's top ops (also when a run was cut).
$PY - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
jax_flops = jax_a = None
for name in ('bench.json', 'bench_merged.json', 'bench_b2.json', 'bench_base.json',
             'torch_compile.json'):
  try:
    results = json.load(open(os.path.join(out, name)))['results']
  except (OSError, ValueError) as e:
    print(f'{name}: {e}')
    continue
  for r in results:
    if r.get('mode') != 'train':
      continue
    if r['framework'] == 'jax':
      jax_flops = jax_flops or r.get('flops_per_step')
      peak = r.get('peak_flops')
    mfu = r.get('mfu')
    if mfu is None and jax_flops and r['global_batch_size'] == (jax_a or {}).get('global_batch_size'):
      mfu = jax_flops / r['step_s_median'] / peak
    tag = f"{name}:{r['framework']}/{r.get('variant', 'jit')}"
    print(f"{tag:<36} batch {r['global_batch_size']:>3} {r['images_per_s']:>8.1f} img/s  "
          f"median {1e3 * r['step_s_median']:.1f} ms  p90 {1e3 * r['step_s_p90']:.1f} ms  "
          f"MFU {100 * (mfu or 0):.1f}%  peak mem {(r.get('peak_memory_bytes') or 0) / 2**30:.1f}"
          f" GiB  compile {r.get('compile_s') or 0:.0f} s")
    if r['framework'] == 'jax' and name == 'bench.json':
      jax_a = r
      print(f"  {(r.get('flops_per_step') or 0) / 1e12:.2f} TFLOP/step, peak "
            f"{(r.get('peak_flops') or 0) / 1e12:.0f} TFLOP/s ({r.get('peak_source')})")
    elif jax_a and r['global_batch_size'] == jax_a['global_batch_size'] and r is not jax_a:
      print(f"  bench.json jax / this: {jax_a['images_per_s'] / r['images_per_s']:.2f}x")
    if r.get('roofline'):
      roof = r['roofline']
      print(f"  roofline: step >= {1e3 * roof['step_s']:.1f} ms at {roof['bandwidth'] / 1e12:.2f}"
            f" TB/s, MFU <= {100 * roof['mfu_bound']:.1f}% ({100 * roof['mfu_bound_own']:.1f}%"
            f" own operands only); measured {100 * (mfu or 0):.1f}%")
prof = jax_a.get('profile') if jax_a else None
if isinstance(prof, dict):
  print(f"profile: {prof['total_ms']:.1f} ms of ops in 3 steps; by category: " + ', '.join(
      f'{k} {100 * v:.1f}%' for k, v in prof['categories'].items()))
  for o in prof['ops'][:25]:
    print(f"  {100 * o['share']:5.1f}% {o['total_ms']:8.2f} ms x{o['count']:<3} "
          f"{o['name'][:30]:<30} {o['source'][-60:]}")
elif prof:
  print(prof)
EOF
ls "$OUT"/*.json > /dev/null 2>&1
