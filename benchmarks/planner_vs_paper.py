"""Print the planner's predictions next to every figure Tsaris et al. 2024 publish (Markdown).

    python benchmarks/planner_vs_paper.py          # the tables docs/frontier.md shows
    python benchmarks/planner_vs_paper.py --fit    # re-derive the throughput constants
    python benchmarks/planner_vs_paper.py --loo    # in-sample vs leave-one-out errors and
                                                   # picks at the paper's 12 points (~2 min)

``--fit`` minimises the mean squared log error of images/s over all published throughput points
(Nelder-Mead over the six throughput constants of ``geofm_hf.planner.Calibration``) and prints
the constants to paste into ``Calibration``; it needs scipy. Memory constants are physical
(bytes per parameter) except ``queued_layers`` and ``runtime_overhead_gib``, set by hand.
"""

from __future__ import annotations

import argparse
import math

from geofm_hf import planner as P
from geofm_hf.planner import validation as V

_FIT_NAMES = V.THROUGHPUT_CONSTANTS


def _throughput_errors(cal: P.Calibration) -> list[float]:
    errors = []
    for (preset, strategy), points in P.PAPER_IMAGES_PER_S.items():
        for nodes, published in points:
            est = P.predict_paper_point(preset, strategy, nodes, cal)
            errors.append(math.log(est.images_per_s / published))
    return errors


def fit() -> P.Calibration:
    """Least-squares fit of the throughput constants (log space), from the fixed prior."""
    return V.fit_throughput(V.throughput_points())


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
        "| model | paper's best | planner's top, 1 node | planner's top, 128 nodes |",
        "|---|---|---|---|",
    ]
    for preset, best in P.PAPER_BEST_STRATEGY.items():
        got = [P.plan(preset, num_nodes=n, **P.PAPER_SETTINGS).ranking[0] for n in (1, 128)]
        lines.append(f"| {preset} | {best} | {got[0]} | {got[1]} |")
    return "\n".join(lines)


def loo_report() -> str:
    """In-sample vs leave-one-out errors, and leave-one-model-out recommendation agreement."""
    out = ["| quantity | points | in-sample mean abs | in-sample max | LOO mean abs | LOO max |"]
    out.append("|---|---|---|---|---|---|")
    for kind, unit in (("memory", "relative"), ("throughput", "ln ratio")):
        r = V.leave_one_out(kind)
        i, o = r["in_sample"], r["out_of_sample"]
        out.append(
            f"| {kind} ({unit}) | {i['n']} | {i['mean_abs']:.3f} | {i['max_abs']:.3f} | "
            f"{o['mean_abs']:.3f} | {o['max_abs']:.3f} |"
        )
    rows = V.leave_one_model_out_recommendations()
    out += [
        "",
        "| model | nodes | paper's best | in-sample top (measured / any) | "
        "out-of-sample top (measured / any) |",
        "|---|---|---|---|---|",
    ]
    for k in range(0, len(rows), 2):
        a, b = rows[k], rows[k + 1]
        out.append(
            f"| {a['model']} | {a['nodes']} | {a['paper_best']} | {a['top_measured']} / "
            f"{a['top_any']} | {b['top_measured']} / {b['top_any']} |"
        )
    for label in ("in_sample", "out_of_sample"):
        hits = [r["agrees"] for r in rows if r["fit"] == label]
        out.append(f"\nrecommendation agreement {label}: {sum(hits)}/{len(hits)}")
    out += [
        "",
        "| model | nodes | measured best (img/s) | LOO pick (its measured img/s) | ratio |",
        "|---|---|---|---|---|",
    ]
    loo = V.recommendation_leave_one_out()
    for r in loo:
        out.append(
            f"| {r['model']} | {r['nodes']} | {r['best']} ({r['best_images_per_s']:,.0f}) | "
            f"{r['pick']} ({r['pick_images_per_s']:,.0f}) | {r['ratio']:.2f} |"
        )
    hits = sum(r["ratio"] >= 0.95 for r in loo)
    out.append(f"\nleave-one-out pick within 5 % of the measured best: {hits}/{len(loo)}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="re-fit the throughput constants")
    parser.add_argument("--loo", action="store_true", help="in-sample vs leave-one-out errors")
    args = parser.parse_args()
    if args.loo:
        print(loo_report())
        return
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
