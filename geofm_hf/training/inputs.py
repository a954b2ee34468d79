"""What the loop consumes: this rank's batches (real, mixed-sensor or synthetic) and the masking
noise, each a function of saved state or of (seed, step, micro-batch, rank)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from geofm_hf import GeoViTMAEConfig
from geofm_hf.data import make_pretrain_dataloader
from geofm_hf.data.device_transforms import resolve_device_transforms
from geofm_hf.data.mixing import MixedPretrainLoader

if TYPE_CHECKING:
    from geofm_hf.training.data_contract import DataContract
    from geofm_hf.training.run import Run


def mask_noise(
    seed: int,
    step: int,
    micro: int,
    rank: int,
    shape: tuple[int, int],
    stream: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The MAE mask (``stream`` 0) or the metadata dropout draws (1) as a function of (seed,
    step, micro-batch, rank): exact on resume, where the global generator restarts.

    Drawn on ``device`` by that device's generator (no host-to-device copy per micro-batch);
    a run resumes on the same kind of device, so the draws repeat exactly."""
    generator = torch.Generator(device=device).manual_seed(
        ((seed * 1_000_003 + step) * 1_009 + micro) * 9_176 + rank + stream * 7_919_000_001
    )
    return torch.rand(shape, generator=generator, device=device)


class SyntheticLoader:
    """Random batches, as the paper's throughput runs used; stateless apart from the step."""

    def __init__(self, batch: int, channels: int, size: int, seed: int, rank: int) -> None:
        self.shape = (batch, channels, size, size)
        self.seed, self.rank, self.consumed = seed, rank, 0
        self.batches_per_epoch = None

    def __iter__(self):
        while True:
            generator = torch.Generator().manual_seed(self.seed * 7919 + self.rank + self.consumed)
            self.consumed += 1
            yield torch.randn(self.shape, generator=generator)

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = state["consumed"]


def loader_settings(device_type: str, num_workers: int | None) -> tuple[int, bool]:
    """(data workers per rank, pin_memory): on GPUs decoding runs in 4 workers and batches are
    pinned for asynchronous copies; on CPU the training processes own the cores."""
    on_gpu = device_type == "cuda"
    return (4 if on_gpu else 0) if num_workers is None else num_workers, on_gpu


def build_dataloader(run: Run, data: DataContract, data_args, config: GeoViTMAEConfig):
    """This rank's stream of normalised, cropped batches (or synthetic ones)."""
    run.extra["dataset"] = data.name_or_path
    batch = run.args.per_device_train_batch_size
    if data_args.synthetic_data:
        return SyntheticLoader(
            batch, config.num_channels, config.image_size, run.args.seed, run.rank
        )
    if config.patch_embedding == "wavelength":
        return _mixed_loader(run, data, data_args, config)
    # Normalise with the statistics stored in the weights' config: for a continued run they
    # are the ones the model learnt with, not the new dataset's.
    return make_pretrain_dataloader(
        data.name_or_path,
        source=data.sources.get(data.name_or_path),
        split=data_args.train_split,
        batch_size=batch,
        seed=run.args.seed,
        rank=run.rank,
        world_size=run.world,
        num_workers=data_args.dataloader_num_workers,
        pin_memory=loader_settings(run.accelerator.device.type, data_args.dataloader_num_workers)[
            1
        ],
        crop_size=config.image_size,
        mean=config.image_mean,
        std=config.image_std,
        revision=data_args.dataset_revision,
        on_error=data_args.on_error,
        max_error_fraction=data_args.max_error_fraction,
        timeout_s=data_args.dataloader_timeout_s,
        device_transforms=resolve_device_transforms(
            data_args.device_transforms, run.accelerator.device
        ),
        return_masks=True,  # nodata / fill / cloud pixels are kept out of the MAE loss
        **_frames_and_metadata(config),
    )


def frames_text(config) -> str:
    parts = [f"{config.num_frames} frames (tubelet {config.tubelet_size})"] * (
        config.num_frames > 1
    ) + [name for name, on in (("dates", config.temporal_encoding),
                               ("places", config.location_encoding)) if on]  # fmt: skip
    if parts and config.metadata_dropout:
        parts.append(f"metadata dropout {config.metadata_dropout}")
    return " | " + ", ".join(parts) if parts else ""


def _frames_and_metadata(config) -> dict:
    """The stream options a model's time-series and metadata settings ask for."""
    wanted = config.temporal_encoding or config.location_encoding
    return {"num_frames": config.num_frames, "return_metadata": bool(wanted)}


def _mixed_loader(run: Run, data: DataContract, data_args, config) -> MixedPretrainLoader:
    """A wavelength model's stream: each dataset normalised with its own statistics, one
    dataset (one band set, with its wavelengths) per batch."""
    loaders, wavelengths = {}, {}
    for name, info in data.datasets:
        loaders[name] = make_pretrain_dataloader(
            name,
            source=data.sources.get(name),
            split=data_args.train_split,
            batch_size=run.args.per_device_train_batch_size,
            seed=run.args.seed,
            rank=run.rank,
            world_size=run.world,
            num_workers=data_args.dataloader_num_workers,
            crop_size=config.image_size,
            revision=data_args.dataset_revision,
            on_error=data_args.on_error,
            max_error_fraction=data_args.max_error_fraction,
            timeout_s=data_args.dataloader_timeout_s,
            # Pinned like the single-dataset stream, so the copy to the GPU is asynchronous.
            pin_memory=loader_settings(
                run.accelerator.device.type, data_args.dataloader_num_workers
            )[1],
            return_masks=True,
            **_frames_and_metadata(config),
        )
        wavelengths[name] = info.wavelengths_um
    bandwidths = {name: info.band_widths() for name, info in data.datasets}
    return MixedPretrainLoader(loaders, wavelengths, data.weights, seed=run.args.seed,
                               bandwidths=bandwidths if config.wavelength_bandwidths else None)  # fmt: skip
