"""Per-block torch.compile (geofm_hf.training.compile): same loss and gradients as eager."""

from __future__ import annotations

import copy

import pytest
import torch

from geofm_hf import GeoViTMAEConfig
from geofm_hf.modeling_geofm import GeoViTMAEForPreTraining
from geofm_hf.training.compile import compile_blocks, compiled_block_count


def _pair(**overrides):
    torch.manual_seed(0)
    config = GeoViTMAEConfig.from_preset(
        "tiny", image_size=32, patch_size=8, num_channels=4, **overrides
    )
    eager = GeoViTMAEForPreTraining(config).train()
    return config, eager, copy.deepcopy(eager)


def _loss_and_grads(model, pixels, noise, bf16):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(pixel_values=pixels, noise=noise).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()}


def _check(backend, bf16, checkpointing):
    config, eager, compiled = _pair()
    if checkpointing:
        eager.activation_checkpointing_enable()
        compiled.activation_checkpointing_enable()
    torch._dynamo.reset()
    assert compile_blocks(compiled, backend=backend) == 6  # 4 encoder + 2 decoder blocks
    assert compile_blocks(compiled, backend=backend) == 0  # idempotent
    assert compiled_block_count(compiled) == 6 and compiled_block_count(eager) == 0
    pixels = torch.randn(2, 4, 32, 32)
    noise = torch.rand(2, config.num_patches)
    loss_e, grads_e = _loss_and_grads(eager, pixels, noise, bf16)
    loss_c, grads_c = _loss_and_grads(compiled, pixels, noise, bf16)
    # bf16 has 8 mantissa bits: fusion reorders roundings, so compare at bf16 resolution.
    tol = 2e-2 if bf16 else 1e-5
    torch.testing.assert_close(loss_c, loss_e, rtol=tol, atol=tol)
    for name, grad in grads_e.items():
        scale = grad.abs().max().clamp_min(1e-6)
        err = (grads_c[name] - grad).abs().max() / scale
        assert err < (5e-2 if bf16 else 1e-4), f"{name}: relative gradient error {err:.2e}"
    # Module tree and checkpoint keys are those of the eager model.
    assert list(compiled.state_dict()) == list(eager.state_dict())


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_compiled_blocks_match_eager_with_checkpointing(bf16):
    # aot_eager: dynamo capture + AOT autograd (the graph compile really runs), without C++ codegen
    # so CI stays fast; inductor is the slow test below and benchmarks/bench_model.py.
    _check("aot_eager", bf16, checkpointing=True)


def test_one_graph_per_block_shape():
    from torch._dynamo.testing import CompileCounter

    config, _, model = _pair()
    counter = CompileCounter()
    torch._dynamo.reset()
    compile_blocks(model, backend=counter)
    pixels = torch.randn(2, 4, 32, 32)
    model(pixel_values=pixels, noise=torch.rand(2, config.num_patches)).loss.backward()
    # 6 blocks, 2 shapes (encoder on 5 tokens, decoder on 17): blocks share their graph.
    assert counter.frame_count == 2


def test_compile_refuses_a_model_without_blocks():
    with pytest.raises(ValueError, match="no GeoViTMAELayer"):
        compile_blocks(torch.nn.Linear(2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_inductor_blocks_match_eager(bf16):
    _check("inductor", bf16, checkpointing=True)


@pytest.mark.slow
def test_recipe_torch_compile_under_fsdp2_with_checkpointing(tmp_path):
    import json

    from pretrain_utils import CPU_FSDP_CONFIG, pretrain

    losses = {}
    for option in ("false", "true"):
        out = tmp_path / option
        result = pretrain(
            out,
            "--max_steps", "3",
            "--save_steps", "100",
            "--plot_reconstructions", "false",
            "--bf16", "true",
            "--gradient_checkpointing", "true",
            "--torch_compile", option,
            config=CPU_FSDP_CONFIG,
        )  # fmt: skip
        assert "FSDP2: block weights sharded" in result.stdout + result.stderr
        lines = (out / "metrics.jsonl").read_text().splitlines()
        losses[option] = [json.loads(line)["loss"] for line in lines if '"loss"' in line]
    assert len(losses["true"]) == 3
    for eager, compiled in zip(losses["false"], losses["true"]):
        assert abs(compiled - eager) <= 2e-2 * abs(eager)  # bf16 tolerance
