"""Launching on a shared CPU machine: two runs of accelerate_configs/cpu.yaml at once."""

import subprocess
import sys

from pretrain_utils import CPU_CONFIG, ROOT, launch, records


def test_two_cpu_runs_at_once_do_not_collide_on_the_rendezvous_port():
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
        str(ROOT / "tests" / "workers" / "hold_port.py"), "8",
    ]  # fmt: skip
    runs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    ports = set()
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith("LAUNCH_OK")]
        assert "world=2 sum=3" in line
        ports.add(line.rsplit("port=", 1)[1])
    assert len(ports) == 2, ports


def test_one_small_collective_per_step_besides_gradient_reduction(tmp_path):
    """10 steps logging every 5: exactly one all-reduce per step (stop signals, time-based save,
    the global loss count and the health sums in one tensor), the logging vote included: none
    per micro-batch and no second one at logging steps."""
    result = launch(
        ROOT / "tests" / "workers" / "count_collectives.py",
        ROOT / "recipes" / "pretrain.py",
        "--config", ROOT / "recipes" / "configs" / "demo.yaml",
        "--output_dir", tmp_path / "run", "--report_to", "none",
        "--per_device_train_batch_size", "4", "--max_steps", "10", "--save_steps", "100",
        "--logging_steps", "5", "--plot_reconstructions", "false",
        "--gradient_accumulation_steps", "2",
    )  # fmt: skip
    lines = records(result.stdout, "COLLECTIVES")
    assert len(lines) == 2, result.stdout[-2000:]
    for line in lines:
        fields = dict(item.split("=") for item in line.split()[1:4])
        assert fields["steps"] == "10", line
        # between the first and the last update: the control all-reduce of steps 2..10
        assert fields["between"] == "9", line
        assert set(line.split()[-1].split(",")) == {"all_reduce"}, line
