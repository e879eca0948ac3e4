#!/usr/bin/env bash
# Everything a GPU machine can tell us, in one run of under 8 minutes, written under one folder:
#   device.txt        nvidia-smi's view (name, driver, CUDA version) and numba-cuda's view of the device
#   tests-cuda.xml    LINREG_TEST_GPU=1 pytest tests/cuda on the hardware (junit), tests-cuda.log its output
#   report/           linreg report --gpu: every workload with a cuda provider, achieved GB/s against the
#                     device's copy bandwidth measured in the same run, ratios against torch CUDA (skipped,
#                     with the reason, where torch has no CUDA)
#   nccl-1.json/.log  backend="cuda" fits over NCCL with torchrun, 1 rank (and nccl-2.* with 2 ranks when there
#                     are 2 GPUs) against the same fits on backend="cpu" (scripts/nccl_check.py); skipped, with
#                     the reason, where torch has no CUDA or NCCL
#   summary.txt       one line per step: ok / FAILED (exit status) / TIMED OUT / skipped, and the total time
# Exit status: 0 when every step passed, 1 when one failed, 2 when no GPU is visible (nothing else runs),
# 3 for bad arguments or a missing Python.
#
# It installs nothing (the GPU machine has no network): it runs in a copy of this working tree with the
# project's virtual environment, ${PYTHON:-.venv/bin/python}.
#
# Usage: scripts/gpu-check.sh [--out DIR] [--quick] [--dry-run]
#   --out DIR   output folder (default benchmarks/results/gpu/<UTC date>-<device slug>/)
#   --quick     the report on small sizes (a first look; the tests are the same)
#   --dry-run   check what can be checked without running anything long: print the plan, the Python and
#               whether a GPU is visible; exit 2 without a GPU, 0 with one
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3

PYTHON=${PYTHON:-.venv/bin/python}
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
# Per-step limits (seconds): 20 + 230 + 2 x 40 + 140 stays under the 8 minutes with room for start-up. The
# report rewrites its files after every case, so a report cut by its limit still leaves the cases that ran.
DEVICE_TIMEOUT=${DEVICE_TIMEOUT:-20}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-230}
NCCL_TIMEOUT=${NCCL_TIMEOUT:-40}
REPORT_TIMEOUT=${REPORT_TIMEOUT:-140}

out=""
quick=()
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "gpu-check: --out needs a folder" >&2; exit 3; }; out=$2; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --quick) quick=(--quick); shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument '$1' (expected --out DIR, --quick, --dry-run)" >&2; exit 3 ;;
    esac
done

if ! "$PYTHON" -c "import linreg, numba" 2>/dev/null; then
    echo "gpu-check: $PYTHON cannot import linreg and numba; set PYTHON to the project's virtual environment's" \
         "python (this script installs nothing)" >&2
    exit 3
fi

no_gpu() {
    echo "gpu-check: FAILED: no GPU is visible: $1" >&2
    echo "gpu-check: this script needs an NVIDIA GPU with its driver; without one, run the CUDA suite under the" \
         "simulator (NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda) and the compile check" \
         "(python -m linreg.kernels.report)" >&2
    exit 2
}

# 1. Is there a GPU? nvidia-smi first (the driver's view), then numba-cuda (what the tests will use).
if ! command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
    no_gpu "'$NVIDIA_SMI' is not on PATH (no NVIDIA driver installed)"
fi
if ! gpu_names=$(timeout "$DEVICE_TIMEOUT" "$NVIDIA_SMI" --query-gpu=name --format=csv,noheader 2>&1) \
        || [ -z "$gpu_names" ]; then
    no_gpu "$NVIDIA_SMI lists no GPU: ${gpu_names:-no output}"
fi
numba_view=$(env -u NUMBA_ENABLE_CUDASIM timeout "$DEVICE_TIMEOUT" "$PYTHON" - 2>&1 <<'EOF'
from numba import cuda

if not cuda.is_available():
    from numba.cuda.cudadrv import driver

    raise SystemExit(f"numba-cuda finds no usable GPU: {getattr(driver.driver, 'initialization_error', None)}")
device = cuda.get_current_device()
name = device.name.decode() if isinstance(device.name, bytes) else device.name
print(f"numba-cuda device: {name}, compute capability {device.compute_capability}, "
      f"{device.MULTIPROCESSOR_COUNT} SMs")
print(f"numba-cuda driver CUDA version: {cuda.cudadrv.driver.driver.get_version()}")
print(f"numba-cuda runtime CUDA version: {cuda.runtime.get_version()}")
EOF
) || no_gpu "$numba_view"

first_gpu=$(printf '%s\n' "$gpu_names" | head -n 1)
slug=$(printf '%s' "$first_gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
out=${out:-benchmarks/results/gpu/$(date -u +%Y-%m-%d)-${slug:-gpu}}

if [ "$dry_run" = 1 ]; then
    echo "gpu-check (dry run): GPU visible: $first_gpu"
    printf '%s\n' "$numba_view"
    echo "gpu-check (dry run): would write into $out: device.txt, tests-cuda.xml, tests-cuda.log, nccl-*.json," \
         "nccl-*.log, report/, summary.txt"
    echo "gpu-check (dry run): python $PYTHON; limits: tests ${TESTS_TIMEOUT} s, NCCL ${NCCL_TIMEOUT} s a run," \
         "report ${REPORT_TIMEOUT} s"
    exit 0
fi

mkdir -p "$out" || exit 3
start=$(date +%s)
status=0
: > "$out/summary.txt"

record() {  # record STEP EXIT_STATUS
    local verdict="ok"
    if [ "$2" = 124 ] || [ "$2" = 137 ]; then
        verdict="TIMED OUT"
    elif [ "$2" != 0 ]; then
        verdict="FAILED (exit status $2)"
    fi
    [ "$2" = 0 ] || status=1
    echo "$1: $verdict" | tee -a "$out/summary.txt"
}

# 2. The device, as the driver and as numba see it.
{
    echo "# gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo 'not a git checkout') $(git status --porcelain 2>/dev/null \
        | grep -q . && echo '(uncommitted changes)')"
    echo
    timeout "$DEVICE_TIMEOUT" "$NVIDIA_SMI" --query-gpu=name,driver_version,memory.total,pci.bus_id \
        --format=csv 2>&1
    echo
    timeout "$DEVICE_TIMEOUT" "$NVIDIA_SMI" 2>&1
    echo
    printf '%s\n' "$numba_view"
    "$PYTHON" -c "import numba, numpy, sys; print('python', sys.version.split()[0], 'numba', numba.__version__,
'numpy', numpy.__version__)" 2>&1
    "$PYTHON" -m pip list 2>/dev/null | grep -i -E '^(numba|cuda|nvidia|torch|numpy) ' || true
} > "$out/device.txt" 2>&1
record "device" 0

# 3. The CUDA test suite on the hardware (the simulator must be off: it cannot mix with a GPU in one process).
env -u NUMBA_ENABLE_CUDASIM LINREG_TEST_GPU=1 timeout "$TESTS_TIMEOUT" "$PYTHON" -m pytest tests/cuda -q \
    -p no:cacheprovider --junitxml="$out/tests-cuda.xml" > "$out/tests-cuda.log" 2>&1
tests_status=$?
record "tests/cuda on the GPU (LINREG_TEST_GPU=1), $(tail -n 1 "$out/tests-cuda.log")" "$tests_status"

# 4. Distributed over NCCL, one GPU per rank: 1 rank, and 2 when there are 2 GPUs (exit 77: skipped).
n_gpus=$(printf '%s\n' "$gpu_names" | grep -c .)
for ranks in 1 2; do
    [ "$ranks" -le "$n_gpus" ] || { echo "distributed NCCL, $ranks ranks: skipped: $n_gpus GPU(s)" \
        | tee -a "$out/summary.txt"; continue; }
    env -u NUMBA_ENABLE_CUDASIM timeout "$NCCL_TIMEOUT" "$PYTHON" scripts/nccl_check.py --ranks "$ranks" \
        --out "$out/nccl-$ranks.json" > "$out/nccl-$ranks.log" 2>&1
    nccl_status=$?
    if [ "$nccl_status" = 77 ]; then
        echo "distributed NCCL, $ranks rank(s): skipped: $(grep -m 1 'skipped' "$out/nccl-$ranks.log")" \
            | tee -a "$out/summary.txt"
    else
        record "distributed NCCL, $ranks rank(s), cuda vs cpu (log: nccl-$ranks.log)" "$nccl_status"
    fi
done

# 5. The GPU section of the report.
env -u NUMBA_ENABLE_CUDASIM timeout "$REPORT_TIMEOUT" "$PYTHON" -m linreg report --gpu "${quick[@]}" \
    --out "$out/report" > "$out/report.log" 2>&1
report_status=$?
record "linreg report --gpu ${quick[*]} (log: report.log)" "$report_status"

echo "total: $(( $(date +%s) - start )) s; results in $out" | tee -a "$out/summary.txt"
exit "$status"
