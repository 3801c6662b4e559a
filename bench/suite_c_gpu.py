"""Deep Speech 2 and A3C at their paper settings on one GPU, through tbd's harness.

    cd repo && PYTHONPATH=src python3 bench/suite_c_gpu.py --out $OUT     # on the GPU machine, ~5 min
    PYTHONPATH=src python3 bench/suite_c_gpu.py --smoke --out /tmp/c-smoke  # CPU check, tiny sizes

The GPU machine has no gymnasium/ale-py and no network: when they are not importable, the wheels
in .whl/ (gymnasium, ale-py with its ROMs, cloudpickle, farama-notifications; carried with the
tree) are installed offline into OUT/rl-site and put on the path of this process and its children.

Runs, each in a child process (as `tbd run` does: an OOM or a crash becomes a recorded failure):
- deepspeech2 paper (batch 8, the paper's setting) in fp32, tf32 and bf16 autocast;
- deepspeech2 large (batch 64) in tf32 and bf16;
- a3c paper (8 actors, t-max 20) with the GPU learner (--device cuda), the same with Hogwild on
  the CPU (--device cpu, the A3C paper's own setup), and 15 actors with the GPU learner (one
  actor per remaining core of a 16-core host).
Writes OUT/suite_c_gpu.json (the records without raw samples, plus card, versions and date) and
prints a summary table last. Needs no `rich`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RL_WHEELS = ("gymnasium-*.whl", "ale_py-*.whl", "cloudpickle-*.whl", "farama_notifications-*.whl")


def ensure_rl(site: Path) -> str:
    """Make gymnasium and ale_py importable here and in child processes; say how."""
    import importlib.util

    if importlib.util.find_spec("gymnasium") and importlib.util.find_spec("ale_py"):
        return "installed"
    wheels = [w for pattern in RL_WHEELS for w in sorted(glob.glob(str(REPO / ".whl" / pattern)))[-1:]]
    if len(wheels) < 2:
        return f"missing (no wheels in {REPO / '.whl'}): a3c runs will be skipped"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), *wheels],
                          capture_output=True, text=True)
    if done.returncode != 0:  # the deep speech runs still go ahead; a3c's are reported skipped
        return f"install from wheels failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    importlib.invalidate_caches()
    return f"from wheels: {', '.join(Path(w).name for w in wheels)}"


def plan(smoke: bool, max_time: float) -> list[dict]:
    if smoke:
        common = dict(device="cpu", flavor="tiny", max_time_s=max_time, max_steps=20)
        return [dict(common, workload="deepspeech2", precision="fp32"),
                dict(common, workload="a3c", precision="fp32"),
                dict(common, workload="a3c", precision="fp32", hparams={"update_rule": "learner"})]
    common = dict(device="cuda", max_time_s=max_time, max_steps=2000)
    return [
        dict(common, workload="deepspeech2", flavor="paper", precision="fp32"),
        dict(common, workload="deepspeech2", flavor="paper", precision="tf32"),
        dict(common, workload="deepspeech2", flavor="paper", precision="bf16"),
        dict(common, workload="deepspeech2", flavor="large", precision="tf32"),
        dict(common, workload="deepspeech2", flavor="large", precision="bf16"),
        dict(common, workload="a3c", flavor="paper", precision="fp32"),
        dict(common, workload="a3c", flavor="paper", precision="fp32", device="cpu"),
        dict(common, workload="a3c", flavor="paper", precision="fp32", batch_size=15),
    ]


def row(point: dict, record: dict, wall_s: float) -> dict:
    m, mem = record.get("metrics") or {}, record.get("memory") or {}
    unit = (record.get("workload") or {}).get("unit", "units")
    a3c = (record.get("method") or {}).get("a3c") or {}
    peak = mem.get("peak_allocated_bytes")
    return {
        "workload": point["workload"], "flavor": point["flavor"], "device": point["device"],
        "batch": (record.get("config") or {}).get("batch_size"), "precision": point["precision"],
        "update_rule": a3c.get("update_rule", "")[:20],
        "throughput": m.get(f"{unit}_per_s"), "unit": unit, "samples_per_s": m.get("samples_per_s"),
        "ci_pct": m.get("throughput_ci95_half_width_pct"), "step_ms": m.get("step_time_ms_p50"),
        "mfu_pct": m.get("mfu_pct"), "peak_alloc_gib": peak / 2**30 if peak else None,
        "gpu_util_nvml_pct": m.get("gpu_util_nvml_pct"), "cpu_util_pct": m.get("cpu_util_pct"),
        "updates_per_s": (m.get("samples_per_s") or 0) / a3c["t_max"] if a3c else None,
        "status": record.get("status"), "error": (record.get("error") or {}).get("message"), "wall_s": wall_s,
    }


def fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else (format(v, spec) if isinstance(v, (int, float)) else str(v))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--max-time", type=float, default=None, help="measurement budget per run, s (default 20; smoke 4)")
    ap.add_argument("--smoke", action="store_true", help="tiny flavors on the CPU")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TBD_HOME", str(out / "tbd-home"))
    rl = ensure_rl(out / "rl-site")
    print(f"gymnasium/ale-py: {rl}", flush=True)

    from tbd.config import RunConfig
    from tbd.harness.launcher import launch

    rows, records = [], []
    for point in plan(args.smoke, args.max_time or (4.0 if args.smoke else 20.0)):
        t0 = time.time()
        try:
            config = RunConfig(**point).validated()
        except Exception as exc:  # e.g. a3c without gymnasium: say so and go on
            rows.append({**point, "status": "skipped", "error": str(exc)})
            continue
        record = launch(config)
        record.pop("samples", None)
        records.append(record)
        rows.append(row(point, record, time.time() - t0))
        r = rows[-1]
        print(f"{r['workload']} {r['flavor']} {r['device']} b{r['batch']} {r['precision']}: {r['status']} "
              f"{fmt(r.get('throughput'))} {r.get('unit')}/s ({fmt(r.get('wall_s'), '.0f')} s){' ' + r['error'] if r.get('error') else ''}", flush=True)

    import torch

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "rl": rl,
            "python": sys.version.split()[0], "cpu_count": os.cpu_count()}
    (out / "suite_c_gpu.json").write_text(json.dumps({"meta": meta, "rows": rows, "records": records}, indent=1, default=str))
    print(f"\n{meta['device']}, torch {meta['torch']} (CUDA {meta['cuda']}), {meta['date']}; full records: {out / 'suite_c_gpu.json'}")
    head = ("workload", "flavor", "dev", "batch", "prec", "throughput", "unit/s", "CI%", "samples/s", "step ms", "MFU%", "peak GiB", "upd/s", "status")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([r["workload"], r["flavor"], r["device"], fmt(r.get("batch"), "d"), r["precision"], fmt(r.get("throughput")),
                          str(r.get("unit", "")), fmt(r.get("ci_pct")), fmt(r.get("samples_per_s")), fmt(r.get("step_ms")),
                          fmt(r.get("mfu_pct"), ".2f"), fmt(r.get("peak_alloc_gib"), ".2f"), fmt(r.get("updates_per_s")),
                          r.get("status") or "-"]))


if __name__ == "__main__":
    main()
