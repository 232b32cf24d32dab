"""Joins what benches/gpu/check.sh measured into one Markdown table: operation, shopcast on the
GPU, PyTorch on CUDA, their ratio against the target, and shopcast on the GPU against shopcast on
`flex` (this machine's CPU cores).

Peer operations: times are each side's median over its repeats (the peer benchmark's JSON);
the ratio is shopcast's time over PyTorch's (target at most 1.0), for batch scoring shopcast's
throughput over PyTorch's (target at least 1.0). Whole `train` runs: wall seconds, with the
demo's target of at least 3x faster than on flex. A step that failed or ran out of its time
limit says so in its cell.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
from compare import OPERATIONS  # noqa: E402  (the peer benchmark's list of operations)

TIMEOUT = 124  # what `timeout` exits with when it stops a step

RUNS = [
    # timings.tsv name (without the device), what it is, target speed-up over flex
    ("demo", "demo shop, whole `train` (both models)", 3.0),
    ("retail-forecaster", "Online Retail, `train --only forecaster`", None),
    ("retail-recommender", "Online Retail, `train --only recommender`", None),
]


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_gpu_runs(logs):
    """The GPU side, one peer-bench run per operation (`peers-gpu-OP.out`), merged into one."""
    merged = {"ops": {}}
    try:
        names = sorted(os.listdir(logs))
    except OSError:
        names = []
    for name in names:
        if name.startswith("peers-gpu-") and name.endswith(".out"):
            run = read_json(os.path.join(logs, name)) or {}
            merged["ops"].update(run.get("ops", {}))
            if run.get("device"):
                merged["device"] = run["device"]
    return merged


def read_timings(path):
    timings = {}
    try:
        with open(path) as f:
            for line in f:
                name, seconds, rc = line.rstrip("\n").split("\t")
                timings[name] = (seconds, rc)
    except OSError:
        pass
    return timings


def fmt(seconds):
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def run_cell(timings, name):
    """(seconds or None, the cell's text) for one whole run."""
    if name not in timings:
        return None, "not run"
    seconds, rc = timings[name]
    if rc == "skipped":
        return None, "skipped (budget)"
    if rc == str(TIMEOUT):
        return None, f"stopped at {float(seconds):.0f} s"
    if rc != "0":
        return None, f"failed (exit {rc})"
    return float(seconds), f"{float(seconds):.1f} s"


def main(work, device):
    logs = os.path.join(work, "logs")
    gpu = read_gpu_runs(logs)
    torch = read_json(os.path.join(logs, "peers-torch.out")) or {}
    flex = read_json(os.path.join(logs, "peers-flex.out")) or {}
    timings = read_timings(os.path.join(work, "timings.tsv"))
    try:
        with open(os.path.join(work, "machine.txt")) as f:
            machine = "; ".join(line.strip() for line in f if line.strip())
    except OSError:
        machine = "machine unknown"
    print(f"{machine}; shopcast on {gpu.get('device', device)}, PyTorch {torch.get('version', '?')} on "
          f"{torch.get('device', '?')}")
    print()
    print("| operation | shopcast GPU | PyTorch CUDA | ratio | target | met | GPU vs flex |")
    print("|---|---|---|---|---|---|---|")
    for name, what, kind, target in OPERATIONS:
        ours = gpu.get("ops", {}).get(name)
        theirs = torch.get("ops", {}).get(name)
        cpu = flex.get("ops", {}).get(name)
        ratio, goal, met = "-", "-", ""
        if ours and theirs:
            value = ours / theirs if kind == "time" else theirs / ours
            ratio = f"{value:.2f}"
            if target is not None:
                ok = value <= target if kind == "time" else value >= target
                met = "yes" if ok else "no"
        if target is not None:
            goal = f"<= {target:.1f}x time" if kind == "time" else f">= {target:.1f}x throughput"
        speedup = f"{cpu / ours:.2f}x" if ours and cpu else "-"
        print(f"| {what} | {fmt(ours) if ours else 'not measured'} | "
              f"{fmt(theirs) if theirs else 'not measured'} | {ratio} | {goal} | {met} | {speedup} |")
    for name, what, target in RUNS:
        ours, ours_text = run_cell(timings, f"{name}-{device}")
        cpu, cpu_text = run_cell(timings, f"{name}-flex")
        speedup = f"{cpu / ours:.2f}x (flex {cpu_text})" if ours and cpu else f"- (flex {cpu_text})"
        goal, met = "-", ""
        if target is not None:
            goal = f">= {target:.0f}x faster than flex"
            met = "yes" if ours and cpu and cpu / ours >= target else "no"
        print(f"| {what} | {ours_text} | - | - | {goal} | {met} | {speedup} |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: table.py WORK_DIR DEVICE (the folder benches/gpu/check.sh wrote, and the "
                 "GPU device it measured)")
    main(sys.argv[1], sys.argv[2])
