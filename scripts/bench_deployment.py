"""Benchmark: per-round overhead of a real deployment against the simulation, same job.

    python scripts/bench_deployment.py [--rounds 4] [--local-epochs 1] [--out bench_deployment.json] [hydra overrides]

Runs the same federated job twice, one after the other on this machine:
  * simulation: `flwr run` on a private local SuperLink, Ray, one SuperNode per institution
    (``uml_fed.federated.launch.flwr_run``, 1 CPU per client);
  * deployment: a SuperLink and one SuperNode per institution as separate processes on 127.0.0.1,
    TLS + SuperNode authentication, submitted with `flwr run` (``tests/harness/deployment.py``).
Per round (server side, rounds.jsonl): round time (send -> all replies aggregated), the slowest client's
local-training time and overhead = round time - that; plus the calibration round and wall times.
Round 1 also pays process start-up, so it is reported apart from rounds 2..R.
Default job: the tests' tiny config (seconds of compute per round), which isolates the overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from uml_fed.experiments.launch import flwr_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.deployment import LocalDeployment  # noqa: E402  (a test tool, not part of the package)


def summarise(out: Path, wall_s: float) -> dict:
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    results = json.loads((out / "results.json").read_text())
    later = rounds[1:] or rounds
    return {
        "wall_s": wall_s,
        "round_s": [r["round_s"] for r in rounds],
        "max_client_train_s": [r["max_client_train_s"] for r in rounds],
        "overhead_s": [r["overhead_s"] for r in rounds],
        "first_round_overhead_s": rounds[0]["overhead_s"],
        "overhead_s_median_after_first": statistics.median(r["overhead_s"] for r in later),
        "overhead_s_mean_after_first": statistics.fmean(r["overhead_s"] for r in later),
        "calibrate_round_s": results["calibrate_round_s"],
        "server_wall_s": results["wall_time_s"],
        "failures": results["failures"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--out", default="bench_deployment.json")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (default: the tests' tiny config)")
    args = ap.parse_args()
    if not args.overrides:
        from conftest import tiny_overrides

        args.overrides = tiny_overrides()
    work = Path(tempfile.mkdtemp(prefix="uml-fed-bench-deploy-"))
    job = {
        "overrides": " ".join([*args.overrides, "train.num_threads=1"]),
        "local-epochs": args.local_epochs,
        "total-epochs": args.rounds * args.local_epochs,
    }

    report: dict = {"job": job, "rounds": args.rounds}
    sim_out = work / "simulation"
    tic = time.perf_counter()
    sim = flwr_run(
        {**job, "output-dir": str(sim_out)},
        federation_config={"num-supernodes": 2, "client-resources-num-cpus": 1},
        timeout=1800,
    )
    if sim.returncode != 0:
        sys.exit(f"simulation failed:\n{sim.output[-4000:]}")
    report["simulation"] = summarise(sim_out, time.perf_counter() - tic)

    dep_out = work / "deployment"
    tic = time.perf_counter()
    with LocalDeployment(work / "deploy") as dep:
        up_s = time.perf_counter() - tic
        run = dep.run({**job, "output-dir": str(dep_out)}, timeout=1800)
    if run.returncode != 0:
        sys.exit(f"deployment run failed:\n{run.output[-4000:]}")
    report["deployment"] = summarise(dep_out, time.perf_counter() - tic)
    report["deployment"]["start_components_s"] = up_s

    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nsame job, {args.rounds} rounds x L={args.local_epochs}, 2 institutions (machine: shared, loaded)")
    print(f"{'':28}{'simulation':>12}{'deployment':>12}")
    rows = [
        ("overhead round 1 (s)", "first_round_overhead_s"),
        ("overhead rounds 2.. med (s)", "overhead_s_median_after_first"),
        ("overhead rounds 2.. mean (s)", "overhead_s_mean_after_first"),
        ("calibration round (s)", "calibrate_round_s"),
        ("server wall (s)", "server_wall_s"),
        ("end to end (s)", "wall_s"),
    ]
    for label, key in rows:
        print(f"{label:28}{report['simulation'][key]:12.2f}{report['deployment'][key]:12.2f}")
    print(
        f"max client train per round (s): sim {report['simulation']['max_client_train_s']}, "
        f"deploy {report['deployment']['max_client_train_s']}"
    )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
