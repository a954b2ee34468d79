#!/bin/bash
# Single-GPU check, one script, one run, under 8 minutes (every part bounded by `timeout`):
#  1. benchmarks/gpu_bench.py (<= 210 s): eager vs per-block compiled vit-base and vit-huge under
#     bf16 autocast (img/s, ratio, MFU vs spec and vs a measured bf16 matmul); which SDPA backend
#     accepts head dims 64/88/105/112; device-side uint16 normalisation/augmentation cost.
#  2. benchmarks/bench_feed.py (<= 60 s): samples/s per data worker, host vs device transforms,
#     workers needed per GPU at the planner's images/s.
#  3. The recipe, FSDP2, bf16, synthetic data: vit-base and vit-huge, --torch_compile false and
#     true (<= 40 s each at GEOFM_CHECK_STEPS=10).
# Prepared without a GPU: not run yet.
#
#   bash benchmarks/gpu_check.sh            # writes outputs under ${OUT:-/tmp/geofm_gpu_check}
#
# MFU counts model FLOPs only (forward x 3, the planner's _flops_per_image without
# recomputation), the usual convention; images/s is measured after the first WARMUP steps.
set -euo pipefail
cd "$(dirname "$0")/.."

OUTDIR="${OUT:-/tmp/geofm_gpu_check}"
BATCH="${GEOFM_CHECK_BATCH:-32}"
LIMIT="${GEOFM_CHECK_TIMEOUT_S:-40}"
mkdir -p "${OUTDIR}"
STEPS="${GEOFM_CHECK_STEPS:-10}"

timeout 210 python benchmarks/gpu_bench.py 2>&1 | tee "${OUTDIR}/gpu_bench.log" || echo "== gpu_bench: FAILED or timed out"
timeout 60 python benchmarks/bench_feed.py --rounds 3 2>&1 | tee "${OUTDIR}/bench_feed.log" || echo "== bench_feed: FAILED or timed out"

python - <<'PY'
import torch
assert torch.cuda.is_available(), "no GPU visible: this check needs one"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY

# A 1-process FSDP2 config (shard group of one GPU) derived from the Frontier default, so that the
# check runs the same FSDP2 code path as the Frontier configs.
CFG="${OUTDIR}/single_gpu_fsdp2.yaml"
python - "${CFG}" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open("accelerate_configs/frontier_fsdp.yaml"))
cfg.update(num_machines=1, num_processes=1)
cfg.pop("parallelism_config", None)  # dp_shard 1 x replicate 1: plain FSDP2 on one device
yaml.safe_dump(cfg, open(sys.argv[1], "w"))
PY

for PRESET in vit-base vit-huge; do
  for COMPILE in false true; do
    LOG="${OUTDIR}/${PRESET}-compile-${COMPILE}.log"
    echo "== ${PRESET} torch_compile=${COMPILE}: ${STEPS} steps, batch ${BATCH}, bf16, FSDP2 (log: ${LOG})"
    START=$(date +%s.%N)
    timeout "${LIMIT}" accelerate launch --config_file "${CFG}" recipes/pretrain.py \
        --config recipes/configs/demo.yaml --preset "${PRESET}" --torch_compile "${COMPILE}" \
        --max_steps "${STEPS}" --per_device_train_batch_size "${BATCH}" \
        --output_dir "${OUTDIR}/${PRESET}-${COMPILE}" --synthetic_data true 2>&1 | tee "${LOG}" || {
        echo "== ${PRESET}: FAILED or timed out after ${LIMIT} s (see ${LOG})"
        continue
    }
    END=$(date +%s.%N)
    python - "${PRESET}" "${STEPS}" "${BATCH}" "${START}" "${END}" "${LOG}" <<'PY'
import re, sys, torch
from geofm_hf import planner
preset, steps, batch, start, end, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
name = torch.cuda.get_device_name(0)
# Dense bf16 peaks (TFLOP/s) of the cards a session may be lent; extend for others.
peaks = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "MI250X": 191.5, "MI300X": 1307.4}
peak = next((v for k, v in peaks.items() if k in name), None)
text = open(log).read()
# Prefer the recipe's own steady-state figure if it prints one ("images/s: 123.4").
found = re.findall(r"images?[/_ ]per[_ ]?s(?:ec)?\W+([0-9.]+)|images/s\W+([0-9.]+)", text)
values = [float(a or b) for a, b in found]
ips = values[-1] if values else steps * batch / (end - start)
how = "recipe-reported" if values else "wall clock incl. start-up (lower bound)"
shape = planner._resolve_shape(preset)
flops = planner._flops_per_image(shape, checkpointing=False)
mfu = ips * flops / (peak * 1e12) if peak else float("nan")
print(f"RESULT recipe {preset} ({log}) on {name}: {ips:.1f} images/s ({how}), {flops / 1e9:.1f} GFLOP/image, "
      f"MFU {mfu:.1%} of {peak} TFLOP/s bf16")
PY
  done
done
