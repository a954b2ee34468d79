#!/bin/bash
# Single-GPU pretraining check: vit-base and vit-huge, bf16, FSDP2 through recipes/pretrain.py,
# printing images/s and MFU against the GPU's bf16 dense peak. For a session lent one GPU;
# each run is bounded by `timeout` (default 240 s, both together < 8 minutes).
#
#   bash benchmarks/gpu_check.sh            # writes outputs under ${OUT:-/tmp/geofm_gpu_check}
#
# MFU counts model FLOPs only (forward x 3, the planner's _flops_per_image without
# recomputation), the usual convention; images/s is measured after the first WARMUP steps.
set -euo pipefail
cd "$(dirname "$0")/.."

OUTDIR="${OUT:-/tmp/geofm_gpu_check}"
STEPS="${GEOFM_CHECK_STEPS:-30}"
BATCH="${GEOFM_CHECK_BATCH:-32}"
LIMIT="${GEOFM_CHECK_TIMEOUT_S:-240}"
mkdir -p "${OUTDIR}"

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
    LOG="${OUTDIR}/${PRESET}.log"
    echo "== ${PRESET}: ${STEPS} steps, batch ${BATCH}, bf16, FSDP2 (log: ${LOG})"
    START=$(date +%s.%N)
    timeout "${LIMIT}" accelerate launch --config_file "${CFG}" recipes/pretrain.py \
        --config recipes/configs/demo.yaml --preset "${PRESET}" \
        --max_steps "${STEPS}" --per_device_train_batch_size "${BATCH}" \
        --output_dir "${OUTDIR}/${PRESET}" --synthetic_data true 2>&1 | tee "${LOG}" || {
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
print(f"RESULT {preset} on {name}: {ips:.1f} images/s ({how}), {flops / 1e9:.1f} GFLOP/image, "
      f"MFU {mfu:.1%} of {peak} TFLOP/s bf16")
PY
done
