"""YAML + command-line arguments for the probe, fine-tune and segmentation recipes
(HfArgumentParser), and the recipes' ``main``."""

from __future__ import annotations

import sys
from pathlib import Path


def _to_cli(config: dict) -> list[str]:
    args: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            args += [f"--{key}", *map(str, value)]
        elif isinstance(value, bool):
            args += [f"--{key}", "true" if value else "false"]
        else:
            args += [f"--{key}", str(value)]
    return args


def parse_recipe_args(dataclass_types, argv: list[str] | None = None):
    """Parse ``[CONFIG.yaml] [--key value ...]``: the YAML gives values, the command line
    overrides them (argparse keeps the last occurrence). Unknown keys raise a clear error."""
    import yaml
    from transformers import HfArgumentParser

    from ..training.arguments import ArgumentError, check_argument_values, coerce_config_values

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    base: list[str] = []
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv.pop(0))
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ArgumentError(f"{path}: cannot read it: {err.strerror}.") from err
        except yaml.YAMLError as err:
            raise ArgumentError(f"{path} is not valid YAML: {err}") from err
        classes = dataclass_types if isinstance(dataclass_types, (list, tuple)) else [
            dataclass_types]  # fmt: skip
        base = _to_cli(coerce_config_values(path, raw, classes, keys_word="keys"))
    parsed = parser.parse_args_into_dataclasses(args=base + argv, look_for_args_file=False)
    check_argument_values(*parsed)
    return parsed


def recipe_main(dataclass_type, run, argv: list[str] | None = None):
    """A recipe's ``main``: parse ``[CONFIG.yaml] [--key value ...]`` into ``dataclass_type`` and
    return ``run(args)``. Wrap it in :func:`~geofm_hf.training.arguments.run_recipe` at the
    command line, so bad arguments and bad data exit 2 with one line."""
    (args,) = parse_recipe_args(dataclass_type, argv)
    return run(args)
