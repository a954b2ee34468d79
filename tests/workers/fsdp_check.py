"""Launched by tests/test_pretrain_fsdp.py under `accelerate launch` (cpu.yaml); builds its FSDP2 Accelerator by hand.

Asserts that FSDP2 really shards the model on CPU, that sharded state saves and loads exactly,
and that the gathered full state equals the unsharded weights.
"""

import sys

import torch
from accelerate import Accelerator

import geofm_hf
from geofm_hf.training import cpu_fsdp


def main(out_dir: str) -> None:
    plugin = cpu_fsdp.fsdp2_plugin_for_cpu()
    acc = Accelerator(fsdp_plugin=plugin, cpu=True)
    assert acc.distributed_type.value == "FSDP", acc.distributed_type
    world = acc.num_processes
    config = geofm_hf.GeoViTMAEConfig.from_preset("tiny", num_channels=13)
    torch.manual_seed(0)
    model = geofm_hf.GeoViTMAEForPreTraining(config)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = acc.prepare(model, optimizer)

    # 1. every parameter of every wrapped block is a DTensor holding ~1/world of the rows
    checked = 0
    for name, module in model.named_modules():
        # fully_shard swaps the class for a generated FSDPGeoViTMAELayer subclass
        if not isinstance(module, geofm_hf.modeling_geofm.GeoViTMAELayer):
            continue
        for pname, param in module.named_parameters():
            local = param.to_local()
            rows = param.shape[0]
            assert local.shape[0] in (rows // world, -(-rows // world)), (name, pname, local.shape)
            assert local.numel() * world >= param.numel() > local.numel(), (name, pname)
            checked += 1
    assert checked >= 8 * (config.num_hidden_layers + config.decoder_num_hidden_layers), checked

    # 2. the gathered full state equals the unsharded weights
    full = acc.get_state_dict(model)
    if acc.is_main_process:
        for key, value in reference.items():
            assert torch.equal(full[key].cpu(), value), key

    # 3. a training step, sharded save, perturbation, load: exactly the saved state comes back
    generator = torch.Generator().manual_seed(acc.process_index)
    pixels = torch.randn(4, 13, 64, 64, generator=generator)
    loss = model(pixels).loss
    acc.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    acc.save_state(out_dir)
    saved = {k: v.to_local().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.to_local().add_(1.0)
    acc.load_state(out_dir)
    for key, value in model.state_dict().items():
        assert torch.equal(value.to_local(), saved[key]), key
    acc.wait_for_everyone()
    acc.print(f"FSDP_CHECK_OK world={world} params_checked={checked}")


if __name__ == "__main__":
    main(sys.argv[1])
