"""Joins the two sides' JSON results (benches/peers/run.sh) into one Markdown table.

Each side's figure for an operation is the median over the rounds of that round's median time.
Ratios are shopcast's time over PyTorch's (lower is better; targets at most 1.0), except for
batch scoring, given as shopcast's throughput over PyTorch's (higher is better; target at least
1.0).
"""

import datetime
import json
import os
import platform
import statistics
import sys

OPERATIONS = [
    # name, what it is, "time" or "throughput", target (None: shown for information)
    ("recommender_training_step",
     "recommender training step (default two-tower, batch 1024, 4 negatives, d=32)", "time", 1.0),
    ("recommender_training_step_neumf",
     "recommender training step (NeuMF option, batch 1024, 4 negatives, d=32, MLP 64-32)",
     "time", None),
    ("sequential_training_step",
     "sequential recommender training step (128 windows x 50, basket completion, 1024 shared "
     "negatives, d=64, 2 blocks)", "time", 1.0),
    ("forecaster_training_step",
     "forecaster training step (batch 256, context 56, horizon 28, hidden 64, 3 quantiles)",
     "time", 1.0),
    ("forecaster_training_step_tensor_ops",
     "the same forecaster step through autodiff tensor ops, no LSTM kernels (shopcast only: what "
     "the kernels are measured against)", "time", None),
    ("forecaster_inference_step", "forecaster inference (batch 256, same shapes)", "time", 1.0),
    ("batch_scoring",
     "batch scoring (20,000 customers x 20,000 products, d=64, 20 exclusions, top-10)",
     "throughput", 1.0),
]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(paths):
    sides = {"shopcast": [], "pytorch": []}
    meta = {}
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        sides[result["side"]].append(result["ops"])
        meta[result["side"]] = result
    if not sides["shopcast"] or not sides["pytorch"]:
        sys.exit("compare.py: need results from both sides")

    def med(side, op):
        values = [r[op] for r in sides[side] if op in r]
        return statistics.median(values) if values else None

    def fmt(seconds):
        return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"

    date = datetime.date.today().isoformat()
    torch_meta = meta["pytorch"]
    print(f"{date}, {cpu_name()}, {os.cpu_count()} cores; shopcast on "
          f"{meta['shopcast']['device']}, PyTorch {torch_meta.get('version', '?')} on "
          f"{torch_meta['device']} ({torch_meta.get('threads', '?')} threads); "
          f"median of {len(sides['shopcast'])} rounds")
    print()
    print("| operation | shopcast | PyTorch | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for name, what, kind, target in OPERATIONS:
        ours, theirs = med("shopcast", name), med("pytorch", name)
        if ours is None or theirs is None:
            continue
        if kind == "time":
            ratio = ours / theirs
            goal = f"<= {target:.1f}x time" if target else "-"
            met = "" if target is None else ("yes" if ratio <= target else "no")
        else:
            ratio = theirs / ours
            goal = f">= {target:.1f}x throughput" if target else "-"
            met = "" if target is None else ("yes" if ratio >= target else "no")
        print(f"| {what} | {fmt(ours)} | {fmt(theirs)} | {ratio:.2f} | {goal} | {met} |")


if __name__ == "__main__":
    main(sys.argv[1:])
