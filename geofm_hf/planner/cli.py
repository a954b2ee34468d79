"""``geofm-plan``: print the plan for a model, or write the accelerate config of any strategy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from geofm_hf._errors import BadInputError, user_error_exit
from geofm_hf.planner.attention import PLATFORMS
from geofm_hf.planner.calibration import _BYTES
from geofm_hf.planner.cost_model import STRATEGIES, plan, write_accelerate_config


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geofm-plan",
        description="Predict memory per GCD and images/s for every FSDP strategy on Frontier, "
        "rank them by the cost model, and write the accelerate config of any strategy.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a preset name, e.g. vit-5b")
    source.add_argument("--config-json", help="path to a GeoViTMAEConfig config.json")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    parser.add_argument("--gcds-per-node", type=int, default=8)
    parser.add_argument("--gcd-memory-gb", type=float, default=64.0)
    parser.add_argument("--local-batch", type=int, default=32)
    parser.add_argument("--precision", choices=sorted(_BYTES), default="bf16")
    parser.add_argument(
        "--reduce-precision",
        choices=sorted(_BYTES),
        default=None,
        help="dtype of gradient reductions (FSDP2 reduce_dtype); default: same as --precision",
    )
    parser.add_argument(
        "--platform", choices=PLATFORMS, default="rocm", help="for the SDPA kernel (default rocm)"
    )
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--write-config",
        metavar="FILE",
        help="also write an accelerate yaml for --strategy (default: the top-ranked one)",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, help="strategy for --write-config")
    return parser


@user_error_exit("geofm-plan")
def main(argv: list[str] | None = None) -> int:
    """Console script ``geofm-plan``."""
    args = _build_parser().parse_args(argv)
    if args.config_json:
        path = Path(args.config_json)
        try:
            source: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError("missing_config", f"--config-json {path}: file not found") from None
        except IsADirectoryError:
            raise BadInputError(
                "bad_config", f"--config-json {path} is a folder; expected a model config.json"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(
                "bad_config", f"--config-json {path} is not valid JSON: {exc}"
            ) from None
        if not isinstance(source, dict):
            raise BadInputError(
                "bad_config",
                f"--config-json {path} holds a JSON {type(source).__name__}; expected an object "
                "of model config fields (hidden_size, num_hidden_layers, ...)",
            )
        from geofm_hf.configuration_geofm import GeoViTMAEConfig

        if not set(source) & set(GeoViTMAEConfig().to_dict()):
            # Planning the default model for an empty or foreign file would answer another
            # question than the one asked.
            raise BadInputError(
                "bad_config",
                f"--config-json {path} names no model config field (found {sorted(source)}); "
                "expected a config.json with hidden_size, num_hidden_layers, ... (or --preset)",
            )
    else:
        source = args.preset
    try:
        result = plan(
            source,
            num_nodes=args.nodes,
            gcds_per_node=args.gcds_per_node,
            gcd_memory_gb=args.gcd_memory_gb,
            local_batch=args.local_batch,
            precision=args.precision,
            activation_checkpointing=args.activation_checkpointing,
            image_size=args.image_size,
            platform=args.platform,
            reduce_precision=args.reduce_precision,
        )
        written = None
        if args.write_config:
            strategy = args.strategy or result.recommended_strategy
            if strategy is None:
                raise ValueError("no strategy fits, so none to write: pass --strategy")
            written = write_accelerate_config(
                strategy,
                args.write_config,
                num_nodes=args.nodes,
                gcds_per_node=args.gcds_per_node,
                precision=args.precision,
                activation_checkpointing=args.activation_checkpointing,
            )
        elif args.strategy:
            raise ValueError("--strategy only applies with --write-config FILE")
    except (ValueError, FileExistsError) as exc:
        print(f"geofm-plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        data = result.to_dict()
        data["written_config"] = str(written) if written else None
        print(json.dumps(data, indent=2))
    else:
        print(result.format_table())
        if written:
            print(f"wrote {written} ({args.strategy or result.recommended_strategy})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
