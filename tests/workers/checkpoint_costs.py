"""Saves and resume-verifies one FSDP2/DDP checkpoint of the tiny model through
``CheckpointManager``, counting the bytes each rank hashes (``_sha256`` is wrapped from here).

Prints ``CKPT rank=R world=W save_hashed=B verify_hashed=B total=T save_s=S verify_s=S``.
"""

import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))  # run as a path by the cpu_fsdp launcher
from record import emit

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.training import checkpointing
from geofm_hf.training.distributed import prepare_model

hashed = [0]
_sha256 = checkpointing._sha256


def counted(path):
    hashed[0] += Path(path).stat().st_size
    return _sha256(path)


checkpointing._sha256 = counted

output_dir = Path(sys.argv[1])
accelerator = Accelerator(cpu=True)
with torch.device("meta"):
    model = GeoViTMAEForPreTraining(GeoViTMAEConfig.from_preset("tiny"))
model = prepare_model(accelerator, model, seed=0)
optimizer = accelerator.prepare_optimizer(torch.optim.AdamW(model.parameters()))
model(pixel_values=torch.randn(2, 3, 64, 64)).loss.backward()
optimizer.step()

manager = checkpointing.CheckpointManager(accelerator, output_dir, limit=None)
start = time.perf_counter()
path = manager.save(1, {"step": 1, "world_size": accelerator.num_processes}, {"consumed": 1})
save_s, save_hashed = time.perf_counter() - start, hashed[0]
hashed[0] = 0
start = time.perf_counter()
assert manager.resolve_resume("auto") == path
verify_s = time.perf_counter() - start
total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "COMPLETE")
emit(
    f"CKPT rank={accelerator.process_index} world={accelerator.num_processes} "
    f"save_hashed={save_hashed} verify_hashed={hashed[0]} total={total} "
    f"save_s={save_s:.3f} verify_s={verify_s:.3f}"
)
accelerator.end_training()
