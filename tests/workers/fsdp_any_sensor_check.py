"""Launched by tests/test_fsdp_any_sensor.py under `accelerate launch` (cpu.yaml); builds its FSDP2 Accelerator by hand.

FSDP2 on a wavelength + time-series + time/location model: blocks really sharded, the gathered
state equals the unsharded weights, and a step where each rank sees another sensor (another band
count) trains and saves/loads sharded state exactly.
"""

import sys

import torch
from accelerate import Accelerator

import geofm_hf
from geofm_hf.training import cpu_fsdp


def main(out_dir: str) -> None:
    acc = Accelerator(fsdp_plugin=cpu_fsdp.fsdp2_plugin_for_cpu(), cpu=True)
    assert acc.distributed_type.value == "FSDP", acc.distributed_type
    world = acc.num_processes
    config = geofm_hf.GeoViTMAEConfig.from_preset(
        "tiny",
        patch_embedding="wavelength",
        wavelength_embed_dim=32,
        num_frames=4,
        tubelet_size=2,
        temporal_encoding=True,
        location_encoding=True,
        metadata_dropout=0.5,
    )
    torch.manual_seed(0)
    model = geofm_hf.GeoViTMAEForPreTraining(config)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = acc.prepare(model, optimizer)

    checked = 0
    for name, module in model.named_modules():
        if not isinstance(module, geofm_hf.modeling_geofm.GeoViTMAELayer):
            continue
        for pname, param in module.named_parameters():
            local = param.to_local()
            assert local.numel() * world >= param.numel() > local.numel(), (name, pname)
            checked += 1
    assert checked >= 8 * (config.num_hidden_layers + config.decoder_num_hidden_layers), checked

    full = acc.get_state_dict(model)
    if acc.is_main_process:
        for key, value in reference.items():
            assert torch.equal(full[key].cpu(), value), key

    # Each rank trains on another sensor: 6 Landsat bands on rank 0, RGB+NIR on rank 1.
    wavelengths = [[0.482, 0.561, 0.655, 0.865, 1.609, 2.201], [0.665, 0.56, 0.49, 0.842]]
    bands = wavelengths[acc.process_index % 2]
    generator = torch.Generator().manual_seed(acc.process_index)
    pixels = torch.randn(2, 4, len(bands), 64, 64, generator=generator)
    dates = torch.tensor([[[2010.0, 100.0 + 16 * f] for f in range(4)]] * 2)
    places = torch.tensor([[40.0, -105.0], [41.0, -104.0]])
    generator_weight = model.decoder.weight_generator.weight
    before = generator_weight.to_local().clone()
    loss = model(pixels, wavelengths=bands, temporal_coords=dates, location_coords=places).loss
    acc.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    assert not torch.equal(generator_weight.to_local(), before)
    acc.save_state(out_dir)
    saved = {k: v.to_local().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.to_local().add_(1.0)
    acc.load_state(out_dir)
    for key, value in model.state_dict().items():
        assert torch.equal(value.to_local(), saved[key]), key
    acc.wait_for_everyone()
    acc.print(f"FSDP_ANY_SENSOR_OK world={world} params_checked={checked}")


if __name__ == "__main__":
    main(sys.argv[1])
