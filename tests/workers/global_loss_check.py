"""One training step of ``geofm_hf.training.loop.train_step`` over a fixed global batch of 4 chips
(the first two mostly cloudy), split across however many processes run this; writes the
gradients the optimizer sees, and the gradients per-rank normalisation would give, to a
safetensors file (main process).

Run alone (1 process) or under ``accelerate launch`` (DDP or FSDP2 on CPU): the masks and the
MAE masking noise of each chip are the same whatever the split, so the gradients must be too.
"""

import sys
import types

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.training import loop
from geofm_hf.training.distributed import canonical_name, prepare_model
from geofm_hf.training.health import HealthWindow

GLOBAL_BATCH = 4
out_path = sys.argv[1]
accelerator = Accelerator(cpu=True)
world, rank = accelerator.num_processes, accelerator.process_index
per_rank = GLOBAL_BATCH // world
config = GeoViTMAEConfig.from_preset("tiny", image_size=32, norm_pix_loss=True)
generator = torch.Generator().manual_seed(0)
pixels = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator)
valid = torch.ones(GLOBAL_BATCH, 32, 32, dtype=torch.bool)
valid[0, :, 4:] = False  # chip 0: one strip of clear sky
valid[1] = False  # chip 1: all cloud
noise = torch.rand(GLOBAL_BATCH, config.num_patches, generator=generator)
mine = slice(rank * per_rank, (rank + 1) * per_rank)


def same_noise_whatever_the_split(seed, step, micro, rank_, shape, stream=0, device="cpu"):
    start = rank_ * per_rank + micro * shape[0]
    return noise[start : start + shape[0]]


loop.mask_noise = same_noise_whatever_the_split

with torch.device("meta"):
    model = GeoViTMAEForPreTraining(config)
model = prepare_model(accelerator, model, seed=0)
named = accelerator.unwrap_model(model).named_parameters  # DDP prefixes "module."


def full(tensor):
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class Recorder:
    """Stands where AdamW stands: keeps the gradients it was asked to apply."""

    grads: dict = {}

    def step(self):
        self.grads = {canonical_name(n): full(p.grad).detach().clone() for n, p in named()}

    def zero_grad(self, set_to_none=True):
        for p in model.parameters():
            p.grad = None


args = types.SimpleNamespace(
    seed=0, gradient_accumulation_steps=1, max_grad_norm=1e9, nan_policy="stop"
)
run = types.SimpleNamespace(
    args=args, accelerator=accelerator, world=world, rank=rank,
    stop=types.SimpleNamespace(received=None, next_batch=next),
)  # fmt: skip
batch = {"pixel_values": pixels[mine], "pixel_mask": valid[mine]}
recorder = Recorder()
loop.train_step(run, model, recorder, iter([batch]), None, config, 0, HealthWindow("cpu"), False)

# What each rank's own mean loss gives once data parallelism averages the ranks (old main).
out = model(pixel_values=pixels[mine], pixel_mask=valid[mine], noise=noise[mine])
accelerator.backward(out.loss)
per_rank_mean = {canonical_name(n): full(p.grad).detach().clone() for n, p in named()}

if accelerator.is_main_process:
    tensors = {f"global.{n}": g.contiguous() for n, g in recorder.grads.items()}
    tensors |= {f"per_rank.{n}": g.contiguous() for n, g in per_rank_mean.items()}
    save_file(tensors, out_path)
accelerator.wait_for_everyone()
accelerator.end_training()
