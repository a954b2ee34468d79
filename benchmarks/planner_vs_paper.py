"""Print the planner's predictions next to every figure Tsaris et al. 2024 publish (Markdown).

    python benchmarks/planner_vs_paper.py          # the tables docs/frontier.md shows
    python benchmarks/planner_vs_paper.py --fit    # re-derive the throughput constants

``--fit`` minimises the mean squared log error of images/s over all published throughput points
(Nelder-Mead over the six throughput constants of ``geofm_hf.planner.Calibration``) and prints
the constants to paste into ``Calibration``; it needs scipy. Memory constants are physical
(bytes per parameter) except ``queued_layers`` and ``runtime_overhead_gib``, set by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from geofm_hf import planner as P

_FIT_NAMES = (
    "efficiency_bf16",
    "efficiency_fp32",
    "latency_intra_us",
    "latency_inter_us",
    "inter_node_gbs",
    "exposed_fraction",
)


def _throughput_errors(cal: P.Calibration) -> list[float]:
    errors = []
    for (preset, strategy), points in P.PAPER_IMAGES_PER_S.items():
        for nodes, published in points:
            est = P.predict_paper_point(preset, strategy, nodes, cal)
            errors.append(math.log(est.images_per_s / published))
    return errors


def fit() -> P.Calibration:
    """Least-squares fit of the throughput constants (log space)."""
    import numpy as np
    from scipy.optimize import minimize

    def calibration(x):
        values = {n: float(math.exp(v)) for n, v in zip(_FIT_NAMES, x)}
        return dataclasses.replace(P.CALIBRATION, **values)

    def loss(x):
        return float(np.mean(np.square(_throughput_errors(calibration(x)))))

    x0 = [math.log(getattr(P.CALIBRATION, n)) for n in _FIT_NAMES]
    result = minimize(loss, x0, method="Nelder-Mead", options={"maxiter": 1500, "xatol": 1e-3})
    return calibration(result.x)


def memory_table() -> str:
    lines = [
        "| model | strategy | nodes | published GB | predicted GB | error |",
        "|---|---|---|---|---|---|",
    ]
    for (preset, strategy, nodes), published in P.PAPER_PEAK_MEMORY_GB.items():
        est = P.predict_paper_point(preset, strategy, nodes)
        err = (est.memory_gb_per_gcd - published) / published
        lines.append(
            f"| {preset} | {strategy} | {nodes} | {published:.1f} | "
            f"{est.memory_gb_per_gcd:.1f} | {err:+.0%} |"
        )
    return "\n".join(lines)


def throughput_table() -> str:
    lines = [
        "| model | strategy | nodes | published img/s | predicted img/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for (preset, strategy), points in P.PAPER_IMAGES_PER_S.items():
        for nodes, published in points:
            est = P.predict_paper_point(preset, strategy, nodes)
            lines.append(
                f"| {preset} | {strategy} | {nodes} | {published:,.0f} | "
                f"{est.images_per_s:,.0f} | {est.images_per_s / published:.2f} |"
            )
    return "\n".join(lines)


def recommendation_table() -> str:
    lines = [
        "| model | paper's best | planner, 1 node | planner, 128 nodes |",
        "|---|---|---|---|",
    ]
    for preset, best in P.PAPER_BEST_STRATEGY.items():
        got = [
            P.plan(preset, num_nodes=n, **P.PAPER_SETTINGS).recommended_strategy for n in (1, 128)
        ]
        lines.append(f"| {preset} | {best} | {got[0]} | {got[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="re-fit the throughput constants")
    args = parser.parse_args()
    if args.fit:
        cal = fit()
        errors = _throughput_errors(cal)
        rms = math.sqrt(sum(e * e for e in errors) / len(errors))
        print(f"RMS log error {rms:.3f} over {len(errors)} points")
        for name in _FIT_NAMES:
            print(f"    {name}: float = {getattr(cal, name):.4g}")
        return
    errors = _throughput_errors(P.CALIBRATION)
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    print("### Peak memory per GCD (local batch 32, 224 px, activation checkpointing)\n")
    print(memory_table())
    print("\n### Throughput (first and last published point of each row)\n")
    print(throughput_table())
    print(f"\nRMS log error of images/s: {rms:.3f} ({len(errors)} points)\n")
    print("### Recommended strategy\n")
    print(recommendation_table())


if __name__ == "__main__":
    main()
