#!/usr/bin/env bash
# One-shot GPU benchmark: the 256 px paper config (configs/default.py) training step in
# bfloat16, fsjax (JAX) against the PyTorch reference (eager NCHW, eager channels_last,
# then torch.compile if the time limit allows), same batch, same GPU, same process.
#
#   OUT=/tmp/gpu_bench BATCH=32 STEPS=20 LIMIT_S=420 bash scripts/gpu_bench.sh
#
# Runs from the repository root with the machine's python3 (JAX with CUDA, PyTorch with
# CUDA). Pure-Python packages that machine lacks (ml_collections, clu) are installed from
# build/gpu_bench_wheels/ when that folder exists (made on a machine with internet by:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     -d build/gpu_bench_wheels clu==0.0.12 ml_collections==1.1.0).
# Writes to $OUT: env.txt, bench.json (written after each measurement, so a run cut by
# LIMIT_S keeps what it finished), log.txt, and a top-ops summary of a JAX profile.
# Test it on CPU with:
#   CONFIG=configs/tiny.py DTYPE=float32 BATCH=2 STEPS=2 bash scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_bench}
CONFIG=${CONFIG:-configs/default.py}
DTYPE=${DTYPE:-bfloat16}
BATCH=${BATCH:-32}
STEPS=${STEPS:-20}
LIMIT_S=${LIMIT_S:-420}
TORCH_COMPILE=${TORCH_COMPILE:-1}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in one process: allocate on demand, not 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
start=$(date +%s)

if [ -d build/gpu_bench_wheels ] && ! $PY -c 'import clu, ml_collections' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/fsjax_site build/gpu_bench_wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/fsjax_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>/dev/null || echo 'no nvidia-smi'
  nproc; uptime
  $PY -c 'import jax, flax, optax, torch
print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__,
      "torch", torch.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/env.txt"

# Run 1 (the one that matters): JAX at BATCH with a profile, PyTorch eager NCHW and
# channels_last. Run 2, only with time left: JAX and PyTorch at BATCH2 (larger batch,
# better utilisation), then torch.compile, cut by the time limit if it takes too long.
left() { echo $(( LIMIT_S - ($(date +%s) - start) - 10 )); }
timeout --signal=TERM --kill-after=10 "$(left)" \
  $PY -m fsjax.main bench --config "$CONFIG" --mode train \
    --config.model.dtype="$DTYPE" --config.per_device_batch_size="$BATCH" \
    --steps "$STEPS" --warmup 3 --compare_torch --torch_channels_last \
    --profile_dir /tmp/fsjax_profile --json "$OUT/bench.json" > "$OUT/log.txt" 2>&1
rc=$?
grep -v -E '^\s*$|Warning|warn\(' "$OUT/log.txt" | tail -n 30
echo "run 1 exit code $rc after $(( $(date +%s) - start )) s"
BATCH2=${BATCH2:-$(( 2 * BATCH ))}
if [ "$(left)" -gt "${MIN_RUN2_S:-150}" ]; then
  extra=()
  [ "$TORCH_COMPILE" = 1 ] && extra+=(--torch_compile)
  timeout --signal=TERM --kill-after=10 "$(left)" \
    $PY -m fsjax.main bench --config "$CONFIG" --mode train \
      --config.model.dtype="$DTYPE" --config.per_device_batch_size="$BATCH2" \
      --steps "$STEPS" --warmup 3 --compare_torch "${extra[@]}" \
      --json "$OUT/bench2.json" > "$OUT/log2.txt" 2>&1
  echo "run 2 exit code $? after $(( $(date +%s) - start )) s"
  grep -E 'Error|error' "$OUT/log2.txt" | tail -n 3
fi
# Headline figures and the profile's top ops from the JSON (also when the run was cut).
$PY - "$OUT/bench.json" "$OUT/bench2.json" <<'EOF'
import json, sys
results = []
for path in sys.argv[1:]:
  try:
    results += json.load(open(path))['results']
  except (OSError, ValueError) as e:
    print(f'{path}: {e}')
jax_r = first_jax = None
for r in results:
  if r.get('mode') != 'train':
    continue
  name = r['framework'] + '/' + r.get('variant', 'jit')
  mfu = r.get('mfu')
  print(f"{name:<28} batch {r['global_batch_size']:>3} {r['images_per_s']:>9.1f} img/s  "
        f"median {1e3 * r['step_s_median']:.1f} ms  p90 {1e3 * r['step_s_p90']:.1f} ms  "
        f"MFU {100 * mfu:.1f}%  peak mem {(r.get('peak_memory_bytes') or 0) / 2**30:.1f} GiB"
        if mfu else f"{name:<28} {r['images_per_s']:.1f} img/s")
  if r['framework'] == 'jax':
    jax_r = r
    first_jax = first_jax or r
    print(f"  compile {r['compile_s']:.1f} s, {(r.get('flops_per_step') or 0) / 1e12:.2f} "
          f"TFLOP/step (XLA's count {(r.get('flops_per_step_xla') or 0) / 1e12:.2f}), "
          f"peak {(r.get('peak_flops') or 0) / 1e12:.0f} TFLOP/s ({r.get('peak_source')})")
  elif jax_r:
    print(f"  jax / this: {jax_r['images_per_s'] / r['images_per_s']:.2f}x")
prof = first_jax.get('profile') if first_jax else None
if isinstance(prof, dict):
  print(f"profile: {prof['total_ms']:.1f} ms of ops in 3 steps; by category: " + ', '.join(
      f'{k} {100 * v:.1f}%' for k, v in prof['categories'].items()))
  for o in prof['ops'][:20]:
    print(f"  {100 * o['share']:5.1f}% {o['total_ms']:8.2f} ms x{o['count']:<3} "
          f"{o['name'][:28]:<28} {o['source'][-60:]}")
elif prof:
  print(prof)
EOF
[ -s "$OUT/bench.json" ] && exit 0
exit $rc
