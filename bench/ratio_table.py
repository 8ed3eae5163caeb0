#!/usr/bin/env python3
"""Turns one itscale_bench_kernels run into the README's markdown ratio table.

    itscale_bench_kernels --benchmark_repetitions=3 --benchmark_format=json > run.json
    python3 bench/ratio_table.py run.json [--portable portable.json] [--time cpu|real]

Benchmark names are `op/impl/param:value/...`. For every op and configuration (the parameters),
the table gives itscale's time per row (also, as rows of their own, other itscale variants named
`itscale_*`, e.g. chain/itscale_kernels) (the median over repetitions when the run has them) and,
for each peer measured on the same configuration in the same run, peer_time / itscale_time
(> 1: itscale is faster), and itscale_time / time of the SIMD max pass over the same rows (the
one-read roofline: 1.0 would be a kernel as fast as reading the row once). For op max_pass the
subject is the SIMD pass itself. Then the goals of issue 3, each met or missed with its ratio.

--portable: a second run, of a build without -march (runtime dispatch); the goal compares every
itscale benchmark present in both runs (speed ratio = native_time / portable_time).
Python 3 standard library only.
"""

import argparse
import json
import re
import statistics
import sys

UNIT_TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
PEER_ORDER = ["llama_cpp", "partial_sort", "nth_element", "scalar", "hf_processor", "lse_then_heap",
              "logprobs_then_select"]
OP_ORDER = ["max_pass", "max", "argmax", "find_invalid", "topk", "gumbel_topk", "softmax", "log_softmax",
            "logsumexp", "top_p", "min_p", "sample", "chain", "beam_select"]
DEFAULT_DIST = "normal1"


def parse_name(name):
    """'topk/itscale/V:128256/k:40/dist:normal1' -> ('topk', 'itscale', {'V': '128256', ...})."""
    parts = name.split("/")
    if len(parts) < 2:
        return None
    params = {}
    for p in parts[2:]:
        if ":" not in p:
            return None
        key, value = p.split(":", 1)
        params[key] = value
    return parts[0], parts[1], params


def rows_of(params):
    return int(params.get("K", params.get("rows", "1")))


def load(path, time_field):
    """{run_name: (op, impl, params, µs per row, repetitions)} from a Google Benchmark JSON."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    samples, medians = {}, {}
    for b in doc.get("benchmarks", []):
        if b.get("error_occurred"):
            print(f"warning: {b['name']}: {b.get('error_message', 'error')}", file=sys.stderr)
            continue
        run_name = b.get("run_name", b["name"])
        t = b[time_field] * UNIT_TO_US[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[run_name] = t
        else:
            samples.setdefault(run_name, []).append(t)
    out = {}
    for run_name in dict.fromkeys(list(samples) + list(medians)):
        parsed = parse_name(run_name)
        if parsed is None:
            continue
        op, impl, params = parsed
        reps = len(samples.get(run_name, []))
        t = medians[run_name] if run_name in medians else statistics.median(samples[run_name])
        out[run_name] = (op, impl, params, t / rows_of(params), reps)
    return doc.get("context", {}), out


def config_key(params):
    return tuple(sorted(params.items()))


def config_label(params):
    order = ["K", "V", "k", "p", "rows", "dist"]
    keys = sorted(params, key=lambda k: (order.index(k) if k in order else len(order), k))
    return " ".join(f"{k}={params[k]}" for k in keys)


def fmt_us(t):
    if t >= 1000:
        return f"{t:,.0f}"
    if t >= 10:
        return f"{t:.1f}"
    return f"{t:.2f}"


def fmt_ratio(r):
    if r is None:
        return ""
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def build_index(runs):
    """{(op, config_key): {impl: µs per row}}"""
    idx = {}
    for op, impl, params, t, _ in runs.values():
        idx.setdefault((op, config_key(params)), {})[impl] = t
    return idx


def max_pass_time(idx, params):
    """The SIMD max pass over the same data: same V, dist and rows; K rows use the one-row pass."""
    mp = {k: v for k, v in params.items() if k in ("V", "dist", "rows")}
    t = idx.get(("max_pass", config_key(mp)), {}).get("simd")
    if t is None and "rows" in mp:
        mp.pop("rows")
        t = idx.get(("max_pass", config_key(mp)), {}).get("simd")
    return t


def is_subject(impl):
    return impl in ("itscale", "simd") or impl.startswith("itscale_")


def table(runs, idx, row_filter=None):
    peers = sorted({impl for (_, impl, _, _, _) in runs.values() if not is_subject(impl)},
                   key=lambda p: (PEER_ORDER.index(p) if p in PEER_ORDER else len(PEER_ORDER), p))
    header = ["op", "configuration", "itscale µs/row"] + [f"{p} ÷ itscale" for p in peers] + ["itscale ÷ SIMD max pass"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    seen = []
    for op, impl, params, _, _ in runs.values():
        key = (op, config_key(params))
        if key not in seen:
            seen.append(key)
    seen.sort(key=lambda k: (OP_ORDER.index(k[0]) if k[0] in OP_ORDER else len(OP_ORDER), k[0]))
    for op, ck in seen:
        impls = idx[(op, ck)]
        params = dict(ck)
        if row_filter and not re.search(row_filter, f"{op} {config_label(params)}"):
            continue
        subjects = sorted((i for i in impls if is_subject(i)), key=lambda i: (i != "itscale", i))
        for subject in subjects:
            t = impls[subject]
            cells = [op if subject == "itscale" else f"{op} ({subject})", config_label(params), fmt_us(t)]
            for p in peers:
                cells.append(fmt_ratio(impls[p] / t) if p in impls else "")
            mp = max_pass_time(idx, params)
            cells.append(fmt_ratio(t / mp) if mp and op != "max_pass" else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_rows(idx, portable_runs, native_runs):
    base = {"V": "128256", "dist": DEFAULT_DIST}

    def t(op, impl, **extra):
        params = dict(base, **extra)
        return idx.get((op, config_key(params)), {}).get(impl)

    def ratio(num, den):
        return None if num is None or den is None else num / den

    rows = []

    def goal(text, value, op, bound):
        if value is None:
            rows.append((text, "not measured", f"{op} {bound}", "not measured"))
            return
        met = value >= bound if op == "≥" else value <= bound
        rows.append((text, fmt_ratio(value), f"{op} {bound}×", "met" if met else "missed"))

    it = t("topk", "itscale", k="40")
    goal("top-k k=40: llama.cpp `top_k(40)` ÷ itscale", ratio(t("topk", "llama_cpp", k="40"), it), "≥", 10)
    goal("top-k k=40: `std::partial_sort` ÷ itscale", ratio(t("topk", "partial_sort", k="40"), it), "≥", 10)
    goal("top-k k=40: itscale ÷ SIMD max pass", ratio(it, t("max_pass", "simd")), "≤", 2)
    goal("top-p 0.9: llama.cpp `top_p` alone ÷ itscale",
         ratio(t("top_p", "llama_cpp", p="0.9"), t("top_p", "itscale", p="0.9")), "≥", 100)
    goal("default chain: llama.cpp ÷ itscale (`sampling_chain` + `sample_inverse_cdf`)",
         ratio(t("chain", "llama_cpp"), t("chain", "itscale")), "≥", 5)
    if t("chain", "itscale_kernels") is not None:
        goal("default chain: llama.cpp ÷ itscale kernels composed in llama.cpp's order (not the goal's "
             "definition; for reference)", ratio(t("chain", "llama_cpp"), t("chain", "itscale_kernels")), "≥", 5)
    goal("softmax: scalar `std::exp` ÷ itscale", ratio(t("softmax", "scalar"), t("softmax", "itscale")), "≥", 20)
    goal("beam selection 16 of 8×V: itscale ÷ logsumexp of the 8 rows",
         ratio(t("beam_select", "itscale", K="8"), t("logsumexp", "itscale", K="8")), "≤", 1.5)
    if portable_runs is None:
        rows.append(("portable (runtime dispatch) ÷ native speed", "pending (no --portable run)", "≥ 0.9×",
                     "pending"))
    else:
        speed = []
        for name, (op, impl, params, t_native, _) in native_runs.items():
            if impl == "itscale" and name in portable_runs:
                speed.append((t_native / portable_runs[name][3], name))
        if not speed:
            rows.append(("portable (runtime dispatch) ÷ native speed", "no common benchmarks", "≥ 0.9×",
                         "not measured"))
        else:
            med = statistics.median(s for s, _ in speed)
            worst = min(speed)
            rows.append((f"portable ÷ native speed, median of all {len(speed)} itscale benchmarks "
                         f"(worst: {worst[1]} {fmt_ratio(worst[0])})", fmt_ratio(med), "≥ 0.9×",
                         "met" if med >= 0.9 else "missed"))
            by_op = {}
            for r, name in speed:
                op, impl = name.split("/")[:2]
                by_op.setdefault(op if impl == "itscale" else f"{op} ({impl})", []).append(r)
            for op in sorted(by_op, key=lambda o: (OP_ORDER.index(o.split()[0]) if o.split()[0] in OP_ORDER
                                                   else len(OP_ORDER), o)):
                m = statistics.median(by_op[op])
                rows.append((f"portable ÷ native speed, {op} (median of {len(by_op[op])}, "
                             f"range {fmt_ratio(min(by_op[op]))}–{fmt_ratio(max(by_op[op]))})", fmt_ratio(m),
                             "≥ 0.9×", "met" if m >= 0.9 else "missed"))
    lines = ["| goal (V = 128 256, normal σ=1, one hot row) | measured | target | status |",
             "|---|---:|---:|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="output of --benchmark_format=json or --benchmark_out")
    ap.add_argument("--portable", help="a second run, of the portable (runtime-dispatch) build")
    ap.add_argument("--rows", metavar="REGEX",
                    help="only table rows whose 'op configuration' matches, e.g. 'V=128256 .*dist=normal1'")
    ap.add_argument("--time", choices=["cpu", "real"], default="cpu",
                    help="cpu_time (default: less disturbed on a shared machine) or real_time")
    args = ap.parse_args()
    field = "cpu_time" if args.time == "cpu" else "real_time"
    ctx, runs = load(args.json, field)
    if not runs:
        sys.exit(f"{args.json}: no op/impl/... benchmarks")
    portable = load(args.portable, field)[1] if args.portable else None
    idx = build_index(runs)
    reps = max(r[4] for r in runs.values())
    extras = [f"{k}: {ctx[k]}" for k in ("xsimd_arch", "llama_cpp") if k in ctx]
    print(f"<!-- {ctx.get('date', '')}, {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
          f"load {ctx.get('load_avg', '')}, {reps} repetition(s), medians of {args.time} time; "
          + "; ".join(extras) + " -->")
    print()
    print(table(runs, idx, args.rows))
    print()
    print(goal_rows(idx, portable, runs))


if __name__ == "__main__":
    main()
