"""Continuing pretraining from an export without every rank loading the whole model (issue 23,
item 5): under FSDP2 each rank reads only its own slices of the export; under DDP rank 0 reads
it and DDP's construction broadcasts it; resuming a checkpoint reads no export and initialises
nothing (``load_state`` fills the model).

The recipe runs unchanged inside ``tests/workers/continue_from_export.py``, which counts from
outside the bytes each rank takes from safetensors and the calls of ``init_weights`` and
``from_pretrained``, and compares the gathered weights with the expected file.
"""

from types import SimpleNamespace

import pytest
import torch
from pretrain_utils import CPU_FSDP_CONFIG, CPU_HSDP_CONFIG, ROOT, launch, records
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from geofm_hf import GeoViTMAEForImageClassification, GeoViTMAEForPreTraining
from geofm_hf.training.arguments import parse_arguments
from geofm_hf.training.data_contract import build_model_config, read_data_contract
from geofm_hf.training.distributed import SafetensorsWeights
from geofm_hf.training.model_setup import build_model

WORKER = ROOT / "tests" / "workers" / "continue_from_export.py"
DEMO = ROOT / "recipes" / "configs" / "demo.yaml"
ARGS = ("--plot_reconstructions", "false", "--bf16", "false", "--warmup_steps", "1")


def demo_config():
    """The config a from-scratch demo run builds (the bundled sample's bands)."""
    model_args, data_args, _ = parse_arguments(["--config", str(DEMO)])
    data = read_data_contract(data_args)
    return build_model_config(model_args, data_args, data.info, data.datasets)


def make_export(folder, max_shard_size="5GB", cls=GeoViTMAEForPreTraining):
    """A random-weight export of the demo's tiny model (several files with a small shard size)."""
    torch.manual_seed(0)
    cls(demo_config()).save_pretrained(folder, max_shard_size=max_shard_size)
    return folder


def run_worker(reference, out, *extra, config=None, world=2):
    result = launch(
        WORKER, reference, "--config", DEMO, "--output_dir", out, "--report_to", "none",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", *ARGS, *extra,
        config=config,
    )  # fmt: skip
    found = {}
    for line in records(result.stdout, "CONTINUE"):
        fields = dict(item.split("=") for item in line.split()[1:])
        found[int(fields["rank"])] = fields
    assert len(found) == world, result.stdout[-3000:] + result.stderr[-3000:]
    return found, result.stdout + result.stderr


def assert_exact(found):
    for rank, fields in found.items():
        assert fields["equal"] == fields["of"], (rank, fields)


@pytest.fixture(scope="module")
def fsdp_continued(tmp_path_factory):
    """A 2-process FSDP2 run continued from an export in several safetensors files."""
    root = tmp_path_factory.mktemp("continued")
    export = make_export(root / "export", max_shard_size="2MB")
    assert (export / "model.safetensors.index.json").is_file()
    reference = root / "reference.safetensors"
    files = sorted(export.glob("model-*.safetensors"))
    assert len(files) > 1
    save_file({k: v for f in files for k, v in load_file(f).items()}, reference)
    found, log = run_worker(
        reference, root / "run", "--model_name_or_path", export,
        "--max_steps", "2", "--save_steps", "2", config=CPU_FSDP_CONFIG,
    )  # fmt: skip
    return SimpleNamespace(root=root, found=found, log=log)


def test_fsdp2_ranks_read_only_their_own_shards_of_the_export(fsdp_continued):
    found = fsdp_continued.found
    assert_exact(found)  # the gathered weights are the export's, bit for bit
    total = int(found[0]["total"])
    reads = [int(found[rank]["read"]) for rank in (0, 1)]
    # Every byte read once across the ranks, each rank about half (dim-0 splits may be uneven).
    assert sum(reads) == total, (reads, total)
    assert max(reads) < 0.55 * total, (reads, total)
    for fields in found.values():
        assert fields["init_calls"] == "0" and fields["from_pretrained_calls"] == "0", fields
    assert "each rank read only its own shards" in fsdp_continued.log


def test_resuming_reads_no_export_and_initialises_nothing(fsdp_continued):
    run = fsdp_continued.root / "run"
    # The checkpoint at step 2 holds what run/final exported at step 2.
    found, log = run_worker(
        run / "final" / "model.safetensors", run, "--model_name_or_path",
        fsdp_continued.root / "export", "--max_steps", "3", "--save_steps", "2",
        config=CPU_FSDP_CONFIG,
    )  # fmt: skip
    assert "at step 2" in log
    assert_exact(found)
    for fields in found.values():
        assert fields["read"] == "0", fields
        assert fields["init_calls"] == "0" and fields["from_pretrained_calls"] == "0", fields


def test_hsdp_each_replica_reads_the_export_once_in_shards(tmp_path):
    # 2 replicas x 2 shards, with activation checkpointing (wrapped module names): each rank
    # reads its shard of the export, so each replica group reads it once.
    export = make_export(tmp_path / "export")
    found, _ = run_worker(
        export / "model.safetensors", tmp_path / "run", "--model_name_or_path", export,
        "--max_steps", "1", config=CPU_HSDP_CONFIG, world=4,
    )  # fmt: skip
    assert_exact(found)
    total = int(found[0]["total"])
    reads = [int(fields["read"]) for fields in found.values()]
    assert sum(reads) == 2 * total and max(reads) < 0.55 * total, (reads, total)


def test_ddp_rank0_reads_the_export_and_ddp_broadcasts_it(tmp_path):
    export = make_export(tmp_path / "export")
    found, log = run_worker(
        export / "model.safetensors", tmp_path / "run", "--model_name_or_path", export,
        "--max_steps", "1",
    )  # fmt: skip
    assert_exact(found)  # rank 1 never read the file: DDP's initial broadcast filled it
    total = int(found[0]["total"])
    assert (int(found[0]["read"]), int(found[1]["read"])) == (total, 0)
    assert "rank 0 read them, DDP broadcast them" in log


def _run(model_name_or_path, resume_path=None):
    model_args, _, args = parse_arguments(["--model_name_or_path", str(model_name_or_path)])
    return SimpleNamespace(model_args=model_args, args=args, resume_path=resume_path)


def test_export_with_missing_or_extra_tensors_is_refused_naming_them(tmp_path):
    export = make_export(tmp_path / "export")
    tensors = load_file(export / "model.safetensors")
    del tensors["decoder.decoder_pred.weight"]
    tensors["decoder.extra.weight"] = torch.zeros(2)
    tensors["vit.layernorm.bias"] = torch.zeros(3)
    save_file(tensors, export / "model.safetensors", metadata={"format": "pt"})
    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(demo_config())
    weights = SafetensorsWeights.from_folder(export)
    with pytest.raises(ValueError) as err:
        weights.check_matches(model)
    text = str(err.value)
    assert "missing from the export 1: decoder.decoder_pred.weight" in text
    assert "not in the model 1: decoder.extra.weight" in text
    assert "vit.layernorm.bias (3,) in the file" in text


def test_export_of_another_model_class_is_refused(tmp_path):
    export = make_export(tmp_path / "export", cls=GeoViTMAEForImageClassification)
    config = AutoConfig.from_pretrained(export)
    with pytest.raises(ValueError, match="holds a GeoViTMAEForImageClassification"):
        build_model(_run(export), config)


def test_resuming_does_not_look_at_the_export(tmp_path):
    # The checkpoint, not the export, holds the weights: a since-deleted export does not matter.
    model, weights = build_model(_run(tmp_path / "gone", resume_path=tmp_path), demo_config())
    assert weights is None and all(p.is_meta for p in model.parameters())
