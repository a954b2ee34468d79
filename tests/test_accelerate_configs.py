"""The Frontier accelerate configs and the Slurm launcher, checked with accelerate's own code."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from geofm_hf import planner

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "accelerate_configs"
FRONTIER = sorted(CONFIG_DIR.glob("frontier_*.yaml"))
SBATCH = REPO / "recipes" / "frontier" / "pretrain.sbatch"
EXPECTED = {
    "frontier_fsdp.yaml": "HYBRID_8",
    "frontier_hybrid8.yaml": "HYBRID_8",
    "frontier_replicate.yaml": "HYBRID_1",
    "frontier_full_shard.yaml": "FULL_SHARD",
    "frontier_shard_grad_op.yaml": "SHARD_GRAD_OP",
}


def _launch_dests() -> set[str]:
    return {action.dest for action in launch_command_parser()._actions}


def test_every_regime_has_a_config():
    assert {p.name for p in FRONTIER} == set(EXPECTED)
    for path in planner.CONFIG_FOR_STRATEGY.values():
        assert (REPO / path).is_file(), path
    assert (REPO / planner.DEFAULT_CONFIG).is_file()


@pytest.mark.parametrize("path", FRONTIER, ids=lambda p: p.name)
def test_config_keys_are_known_to_accelerate(path):
    cfg = load_config_from_file(str(path))  # rejects unknown top-level keys
    assert isinstance(cfg, ClusterConfig)
    # Nested keys are copied onto the launch arguments without a check: compare them with the
    # launch parser so that a typo fails here instead of being silently ignored.
    dests = _launch_dests()
    for key in cfg.fsdp_config:
        name = key if key.startswith("fsdp_") else f"fsdp_{key}"
        assert name in dests, f"{path.name}: unknown fsdp_config key {key}"
    for key in cfg.parallelism_config:
        assert key in dests, f"{path.name}: unknown parallelism_config key {key}"
    assert cfg.num_processes == 8 * cfg.num_machines
    assert cfg.mixed_precision == "bf16"
    if cfg.distributed_type.value == "FSDP":
        assert str(cfg.fsdp_config["fsdp_version"]) == "2"
        assert cfg.fsdp_config["fsdp_activation_checkpointing"] is True
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
        assert "fsdp_transformer_layer_cls_to_wrap" not in cfg.fsdp_config  # from the model
        assert "fsdp_backward_prefetch" not in cfg.fsdp_config  # FSDP1-only
        par = cfg.parallelism_config
        product = (
            par["parallelism_config_dp_replicate_size"] * par["parallelism_config_dp_shard_size"]
        )
        assert product == cfg.num_processes


@pytest.mark.parametrize("path", FRONTIER, ids=lambda p: p.name)
def test_every_key_is_commented(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#"), "each file opens with the evidence for its regime"
    keys = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    assert len(keys) > 5
    # Each block of keys is preceded by a comment (a header comment covers the keys under it).
    uncommented = [
        lines[i]
        for i in keys
        if not lines[i - 1].lstrip().startswith("#")
        and lines[i - 1] not in (lines[j] for j in keys)
    ]
    assert not uncommented, uncommented


def test_the_default_is_the_hybrid8_regime():
    load = lambda name: yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8"))  # noqa: E731
    assert load("frontier_fsdp.yaml") == load("frontier_hybrid8.yaml")


@pytest.mark.parametrize("name,strategy", sorted(EXPECTED.items()))
def test_planner_reads_the_strategy_of_each_config(name, strategy):
    got, result = planner.plan_from_accelerate_config("vit-base", CONFIG_DIR / name, num_nodes=2)
    assert got == strategy
    assert result.activation_checkpointing is (strategy != "HYBRID_1")
    assert result.strategies[got].applicable


def test_planner_rejects_a_config_it_cannot_model(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("distributed_type: DEEPSPEED\nnum_processes: 8\n", encoding="utf-8")
    with pytest.raises(ValueError, match="FSDP or MULTI_GPU"):
        planner.plan_from_accelerate_config("vit-base", bad)
    with pytest.raises(FileNotFoundError):
        planner.plan_from_accelerate_config("vit-base", tmp_path / "missing.yaml")


# -- the Slurm launcher ----------------------------------------------------------------------


def test_sbatch_parses():
    bash = shutil.which("bash")
    for script in (SBATCH, SBATCH.parent / "env.sh"):
        subprocess.run([bash, "-n", str(script)], check=True)
    text = SBATCH.read_text(encoding="utf-8")
    for directive in ("--signal=B:USR1@300", "--requeue", "--gpus-per-node=8"):
        assert f"#SBATCH {directive}" in text
    env = (SBATCH.parent / "env.sh").read_text(encoding="utf-8")
    for var in ("NCCL_SOCKET_IFNAME=hsn0", "MIOPEN_USER_DB_PATH", "HF_HUB_OFFLINE=1", "FI_CXI_ATS"):
        assert var in env


def _print_command(
    tmp_path: Path, nodes: int, config: str, *extra: str, env: dict | None = None
) -> tuple[str, str]:
    """Runs the sbatch in print-only mode with a stand-in `scontrol` (no Slurm here)."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    scontrol = fake / "scontrol"
    hosts = "\n".join(f"frontier{i:05d}" for i in range(100, 100 + nodes))
    scontrol.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(hosts)}\n", encoding="utf-8")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "GEOFM_"))}
    env = {
        **inherited,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "GEOFM_PRINT_ONLY": "1",
        "GEOFM_REPO": str(REPO),
        "GEOFM_OUTPUT_DIR": str(tmp_path / "out"),
        "GEOFM_ACCELERATE_CONFIG": config,
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_JOB_NODELIST": f"frontier[00100-{100 + nodes - 1:05d}]",
        "SLURM_JOB_ID": "4242",
        **(env or {}),
    }
    proc = subprocess.run(
        ["bash", str(SBATCH), *extra], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(
        line.split(" ", 1) for line in proc.stdout.splitlines() if line[:4] in ("SRUN", "NODE")
    )
    return lines["SRUN"], lines["NODE_CMD"]


@pytest.mark.parametrize(
    "config,nodes,replicate,shard",
    [
        ("accelerate_configs/frontier_fsdp.yaml", 4, 4, 8),
        ("accelerate_configs/frontier_hybrid8.yaml", 1, 1, 8),
        ("accelerate_configs/frontier_shard_grad_op.yaml", 3, 1, 24),
        ("accelerate_configs/frontier_full_shard.yaml", 2, 1, 16),
        ("accelerate_configs/frontier_replicate.yaml", 2, None, None),
    ],
)
def test_sbatch_builds_a_launch_accelerate_accepts(tmp_path, config, nodes, replicate, shard):
    if not (REPO / "recipes" / "pretrain.py").is_file():
        pytest.fail("recipes/pretrain.py is missing: the launcher has nothing to start")
    srun, node_cmd = _print_command(tmp_path, nodes, config, "--preset", "vit-5b")
    assert f"--nodes={nodes} --ntasks-per-node=1" in srun
    launch = node_cmd.split("exec ", 1)[1].replace('"${SLURM_NODEID}"', "1")
    argv = shlex.split(launch)
    assert argv[:2] == ["accelerate", "launch"]
    args = launch_command_parser().parse_args(argv[2:])
    assert (REPO / args.config_file).is_file() and args.config_file == config
    assert args.training_script == "recipes/pretrain.py"
    assert (REPO / args.training_script).is_file()
    assert args.machine_rank == 1
    assert args.main_process_ip == "frontier00100"
    assert args.num_machines == nodes and args.num_processes == 8 * nodes
    assert args.training_script_args[-2:] == ["--preset", "vit-5b"]
    assert "--resume_from_checkpoint" in args.training_script_args
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        args, _, _ = _validate_launch_command(args)
    finally:
        os.chdir(cwd)
    env = prepare_multi_gpu_env(args)
    if replicate is None:
        assert "ACCELERATE_USE_FSDP" not in env
        return
    assert env["FSDP_VERSION"] == "2"
    assert int(env["PARALLELISM_CONFIG_DP_REPLICATE_SIZE"]) == replicate
    assert int(env["PARALLELISM_CONFIG_DP_SHARD_SIZE"]) == shard
    assert replicate * shard == args.num_processes


def test_sbatch_refuses_a_missing_config(tmp_path):
    env = {
        **os.environ,
        "GEOFM_PRINT_ONLY": "1",
        "GEOFM_REPO": str(REPO),
        "GEOFM_MAIN_ADDR": "x",
        "GEOFM_ACCELERATE_CONFIG": "accelerate_configs/nope.yaml",
        "SLURM_JOB_NUM_NODES": "1",
    }
    proc = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "accelerate config not found" in proc.stderr


def _launch_args(node_cmd: str):
    launch = node_cmd.split("exec ", 1)[1].replace('"${SLURM_NODEID}"', "0")
    return launch_command_parser().parse_args(shlex.split(launch)[2:])


def test_sbatch_defaults_to_a_frontier_node(tmp_path):
    srun, node_cmd = _print_command(tmp_path, 2, "accelerate_configs/frontier_fsdp.yaml")
    assert "--cpus-per-task=56 --gpus-per-node=8" in srun
    assert _launch_args(node_cmd).num_processes == 16


@pytest.mark.parametrize(
    "env,cpus,gpus,procs",
    [
        # A CPU test cluster (tests/test_slurm.py): no GPU request at all.
        ({"GEOFM_PROCS_PER_NODE": "2", "GEOFM_CPUS_PER_TASK": "2", "GEOFM_GPUS_PER_NODE": "0"},
         2, None, 2),
        # The allocation's own counts (sbatch --gpus-per-node=gpu:4 -c 32).
        ({"SLURM_GPUS_PER_NODE": "gpu:4", "SLURM_CPUS_PER_TASK": "32"}, 32, 4, 4),
        # The environment wins over the allocation.
        ({"SLURM_GPUS_PER_NODE": "8", "GEOFM_GPUS_PER_NODE": "4", "GEOFM_PROCS_PER_NODE": "8"},
         56, 4, 8),
    ],
)  # fmt: skip
def test_sbatch_geometry_follows_the_allocation_or_environment(tmp_path, env, cpus, gpus, procs):
    srun, node_cmd = _print_command(
        tmp_path, 3, "accelerate_configs/frontier_full_shard.yaml", env=env
    )
    assert f"--cpus-per-task={cpus} " in srun
    if gpus is None:
        assert "--gpus-per-node" not in srun
    else:
        assert f"--gpus-per-node={gpus} " in srun
    args = _launch_args(node_cmd)
    assert args.num_processes == 3 * procs
    # One shard group over the whole job, whatever its size.
    assert args.parallelism_config_dp_shard_size == 3 * procs
