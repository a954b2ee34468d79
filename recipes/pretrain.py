"""MAE pretraining of a geospatial ViT, through Accelerate (DDP or FSDP2 from the launch config).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/pretrain.py \
        --config recipes/configs/demo.yaml [--max_steps 50 ...]

The steps (arguments -> model config -> Accelerator and run folder -> model -> data -> optimiser
-> resume -> train -> export) are :func:`geofm_hf.training.pretrain`, which runs the same
pretraining from Python. This file is the command line: bad arguments end in one line and exit 2.
"""

from __future__ import annotations

import sys

from geofm_hf.training.arguments import run_recipe
from geofm_hf.training.pretrainer import pretrain


def main(argv: list[str] | None = None) -> int:
    return pretrain(argv)


if __name__ == "__main__":
    sys.exit(run_recipe(main))
