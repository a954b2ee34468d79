"""YAML + command-line arguments for the classification recipes (HfArgumentParser)."""

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

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    base: list[str] = []
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv.pop(0))
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a mapping of argument names, found {config!r}.")
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; run with --help for the options.")
        base = _to_cli(config)
    return parser.parse_args_into_dataclasses(args=base + argv, look_for_args_file=False)
