"""Version against version: this interpreter's torch against another environment's, on resnet50
and gpt, in one call, through tbd's own sweep across environments (docs/environments.md).

    PYTHONPATH=src python3 bench/envs_gpu.py --python /path/to/venv/bin/python --out $OUT   # H200, < 4 min
    PYTHONPATH=src python3 bench/envs_gpu.py --make-env --out /tmp/envs-smoke --device cpu --quick

The second environment is whatever `--python` names: a venv with another torch (e.g. `tbd env
create torch211 --framework torch==2.11.0` on a machine that can download it) and tbd's light
core. `--make-env` instead makes one here without pip or a network: a venv whose .pth file lists this
interpreter's site-packages and this checkout's src (the same torch and tbd at another path); it
checks the plumbing (the ratio should then be 1 within its CI), not a version difference.

Points: resnet50 paper flavor, batch 128, bf16, channels_last; gpt paper flavor (124M, its
batch), bf16; each run in both environments, baseline first, as one sweep. Writes OUT/envs_gpu.json
(the environments, every pair with its ratio and 95% bootstrap CI), OUT/envs_gpu.csv, the run
store under OUT/tbd-home and OUT/report.html; prints one line per run and per pair. Needs no GPU
with --device cpu.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

POINTS = {  # workload -> (batch size or None for the flavor's, channels_last)
    "resnet50": (128, True),
    "gpt": (None, False),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--python", help="the second environment's interpreter (with tbd's light core and torch)")
    where.add_argument("--make-env", action="store_true", help="make one here: the same torch at another path (no pip, no network)")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workloads", default=",".join(POINTS))
    ap.add_argument("--max-time", type=float, default=20.0, help="measurement budget per run, s (compilation not counted)")
    ap.add_argument("--quick", action="store_true", help="tiny flavors, fp32, 3 s per run: a check of the script")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TBD_HOME"] = str(out / "tbd-home")

    from tbd.report.compare import across_environments
    from tbd.report.html import write_report
    from tbd.results import envs
    from tbd.results.store import Store
    from tbd.sweep.engine import SweepRunner
    from tbd.sweep.spec import SweepSpec, plan

    started = time.time()
    if args.make_env:
        python = make_env(out / "envs-bench")
        print(f"made the second environment {python} (the same torch at another path)", flush=True)
    else:
        python = envs.resolve(args.python, None)
    workloads = [w for w in args.workloads.split(",") if w]
    quick = args.quick
    spec = SweepSpec(name="envs-bench", workloads=workloads, frameworks=["torch"], flavors=["tiny" if quick else "paper"],
                     devices=[args.device], precisions=["fp32" if quick or args.device == "cpu" else "bf16"],
                     channels_last=not quick and args.device == "cuda", python=["current", python])
    spec.batch_sizes_per_workload = {w: [POINTS[w][0]] for w in workloads if w in POINTS and POINTS[w][0] and not quick}
    spec.budget.update(max_time=3.0 if quick else args.max_time, max_steps=60 if quick else 3000, target_ci=1.0, min_timed_steps=10)
    the_plan = plan(spec)
    for note in the_plan.notes:
        print(f"not run: {note}", flush=True)
    store = Store()
    store.prepare()

    def on_point(event, record, info):
        if event == "done":
            m = record.get("metrics") or {}
            unit = (record.get("workload") or {}).get("unit", "samples")
            rate = m.get(f"{unit}_per_s")
            env = record.get("environment") or {}
            print(f"[{time.time() - started:5.0f} s] {info['label']}: {record['status']} "
                  f"{'%.4g %s/s' % (rate, unit) if rate else (record.get('error') or {}).get('message', '')} "
                  f"(torch {env.get('framework_version')}, {env.get('interpreter')})", flush=True)

    result = SweepRunner(the_plan, store, on_point=on_point, rerun=True).run()
    found = across_environments(result.records)
    pairs = [] if found is None else [
        {"point": p.label, "baseline_rate": _rate(p.a), "other_rate": _rate(p.b), "ratio": p.ratio, "ci95": [p.ci_low, p.ci_high],
         "converged": p.converged, "baseline_status": p.a["status"], "other_status": p.b["status"]} for p in found.pairs]
    for p in pairs:
        print(f"pair {p['point']}: ratio {p['ratio']:.3f} (95% CI {p['ci95'][0]:.3f}-{p['ci95'][1]:.3f})"
              f"{'' if p['converged'] else ' not converged'}", flush=True)
    summary = {"device": args.device, "quick": quick, "baseline_python": sys.executable, "other_python": python,
               "environments": found.environments if found else {}, "pairs": pairs, "unpaired": found.lonely if found else [],
               "runs": [{"label": envs.tag(r) or "@current", "config": r["config"], "status": r["status"], "error": r.get("error")}
                        for r in result.records],
               "elapsed_s": time.time() - started}
    (out / "envs_gpu.json").write_text(json.dumps(summary, indent=1, default=str))
    with open(out / "envs_gpu.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["point", "baseline_rate", "other_rate", "ratio", "ci95_low", "ci95_high", "converged"])
        for p in pairs:
            writer.writerow([p["point"], p["baseline_rate"], p["other_rate"], p["ratio"], *p["ci95"], p["converged"]])
    write_report(result.records, out / "report.html", "tbd: torch against torch across environments")
    print(f"done in {time.time() - started:.0f} s: {len(pairs)} pair(s); {out / 'envs_gpu.json'}, {out / 'report.html'}", flush=True)
    return 0 if pairs else 1


def make_env(folder: Path) -> str:
    """A venv seeing this interpreter's packages and this checkout's tbd through a .pth file:
    nothing installed, nothing downloaded (the GPU machine reaches no package index)."""
    import site
    import subprocess

    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    src = Path(__file__).resolve().parents[1] / "src"
    paths = [str(src)] + [p for p in site.getsitepackages() if os.path.isdir(p)]
    Path(purelib, "_tbd_bench.pth").write_text("".join(f"{p}\n" for p in paths))
    (folder / "tbd-env.json").write_text(json.dumps({"name": "envs-bench", "python": str(python)}))
    return str(python)


def _rate(record: dict) -> float | None:
    unit = (record.get("workload") or {}).get("unit", "samples")
    return (record.get("metrics") or {}).get(f"{unit}_per_s")


if __name__ == "__main__":
    sys.exit(main())
