"""Multi-process runs on the CPU: gloo with 2 ranks through the CLI, two torchrun agents meeting
over loopback as two "machines", DDP/FSDP2 against one process on the whole batch, a rank that
dies, and the pure parts (SLURM, validation, merge, trace analysis, scale) without processes.

`pytest -q tests/distributed` runs them (about a minute and a half on 2 cores).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd import topology
from tbd.harness import distributed
from tbd.commands.options import topology_options
from tbd.frameworks.torch.distributed import comm_stats
from tbd.harness.distributed_worker import merge
from tbd.results.record import MEASURED, RunRecord
from tbd.results.store import Store
from tests.conftest import run_cli

HERE = Path(__file__).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # 2 cores shared by all ranks: no oversubscription


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _only_record(home: Path) -> dict:
    records = Store(home).list()
    assert len(records) == 1, [r["id"] for r in records]
    return records[0]


# --- with processes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_with_gloo_through_the_cli(tbd_home):
    out = run_cli("run", "resnet50", "--nproc-per-node", "2", "--device", "cpu", "--max-steps", "6", env=ONE_THREAD, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    record = _only_record(tbd_home)
    assert record["status"] in MEASURED  # 6 steps: measured, converged or not
    dist = record["distributed"]
    assert dist["world_size"] == 2 and [r["rank"] for r in dist["ranks"]] == [0, 1]
    per_rank = record["samples"]["per_rank_step_s"]
    assert len(per_rank) == 2 and len(per_rank[0]) == len(per_rank[1]) == record["metrics"]["total_steps"] <= 6
    # Step time is the slowest rank's; units are the global batch (4 = 2 per rank).
    assert record["samples"]["step_s"] == [max(a, b) for a, b in zip(*per_rank)]
    assert set(record["samples"]["units"]) == {4.0} and record["config"]["batch_size"] == 4
    memory = record["memory"]
    assert len(memory["per_rank"]) == 2
    assert memory["host_peak_rss_bytes"] == max(m["host_peak_rss_bytes"] for m in memory["per_rank"])  # never a sum
    assert record["metrics"]["images_per_s"] > 0 and record["metrics"]["world_size"] == 2


@pytest.mark.slow
def test_two_machines_meet_over_loopback(tmp_path):
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {**os.environ, **ONE_THREAD, "TBD_HOME": str(tmp_path / f"node{node}"), "COLUMNS": "200"}
        cmd = [sys.executable, "-m", "tbd.cli", "run", "resnet50", "--device", "cpu", "--max-steps", "4", "--nnodes", "2",
               "--node-rank", str(node), "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    records = [_only_record(tmp_path / f"node{node}") for node in (0, 1)]
    assert records[0]["id"] == records[1]["id"]  # both machines store rank 0's record
    dist = records[0]["distributed"]
    assert dist["nnodes"] == 2 and dist["rendezvous"] == f"static at 127.0.0.1:{port}"
    assert [(r["rank"], r["node_rank"]) for r in dist["ranks"]] == [(0, 0), (1, 1)]


@pytest.mark.slow
def test_ddp_and_fsdp2_match_one_process_on_the_whole_batch(tmp_path):
    """A tiny MLP (no BatchNorm: BN would normalize each rank's shard with its own statistics,
    a real difference that has nothing to do with gradient averaging), SGD with momentum, fp32."""
    import torch

    from tests.distributed import ddp_equivalence_worker as worker

    (tmp_path / "one").mkdir()
    worker.main(str(tmp_path / "one"), ["ddp"])  # no RANK in the environment: one process, unwrapped
    one = torch.load(tmp_path / "one" / "ddp.pt")
    assert one["wrapped"] == "Blocks"
    moved = max((one["state"][k] - one["initial"][k]).abs().max().item() for k in one["state"])
    assert moved > 1e-2  # training changed the parameters well beyond the tolerance below
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "ddp_equivalence_worker.py"), str(tmp_path), "ddp", "fsdp2"]
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE.parents[1])])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for parallel, wrapper in (("ddp", "DistributedDataParallel"), ("fsdp2", "FSDPBlocks")):
        two = torch.load(tmp_path / f"{parallel}.pt")
        assert two["wrapped"] == wrapper
        for name, value in one["state"].items():
            torch.testing.assert_close(two["state"][name], value, rtol=1e-5, atol=1e-5, msg=f"{parallel}: {name}")


@pytest.mark.slow
def test_jax_over_two_processes_matches_one_process(tmp_path):
    """jax.distributed.initialize behind torchrun, gloo collectives on the CPU, state replicated
    and the batch split over the global mesh: the gradient all-reduce is XLA's."""
    import numpy as np

    pytest.importorskip("jax")
    from tests.distributed import jax_equivalence_worker as worker

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "jax_equivalence_worker.py"), str(tmp_path / "two.npz")]
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE.parents[1])])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    worker.main(str(tmp_path / "one.npz"))
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(one["processes"]) == 1 and int(two["processes"]) == 2
    assert np.abs(one["w1"] - one["w1_initial"]).max() > 1e-2  # training moved the weights
    for name in ("w1", "w2"):
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_run_cleanly(tbd_home):
    earlier = RunRecord(id="20200101-000000-aaaaaa", config=RunConfig(workload="resnet50", batch_size=4).to_dict())
    earlier["status"] = "ok"
    Store(tbd_home).save(earlier)
    env = {**ONE_THREAD, "TBD_TEST_KILL_RANK": "1", "TBD_TEST_KILL_AFTER_STEPS": "2"}
    out = run_cli("run", "resnet50", "--nproc-per-node", "2", "--device", "cpu", "--max-steps", "200", "--max-time", "120",
                  env=env, timeout=180)  # the bound: torchrun stops rank 0 within seconds of rank 1's exit
    assert out.returncode == 1, out.stdout + out.stderr
    assert "rank 1 exited with code 17" in out.stdout
    store = Store(tbd_home)
    assert store.get(earlier["id"]) == json.loads(earlier.to_json())  # earlier results kept
    failed = [r for r in store.list() if r["id"] != earlier["id"]]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and failed[0]["error"]["kind"] == "crash"


@pytest.mark.slow
def test_a_rank_that_hangs_ends_the_run_within_the_collective_timeout(tbd_home):
    env = {**ONE_THREAD, "TBD_TEST_KILL_RANK": "1", "TBD_TEST_KILL_AFTER_STEPS": "1", "TBD_TEST_KILL_MODE": "hang", "TBD_DIST_TIMEOUT_S": "5"}
    out = run_cli("run", "resnet50", "--nproc-per-node", "2", "--device", "cpu", "--max-steps", "200", env=env, timeout=150)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "run failed (timeout): rank 1 stopped responding" in out.stdout
    (failed,) = Store(tbd_home).list()
    assert failed["error"]["kind"] == "timeout" and "Timed out" in failed["error"]["message"]


# --- without processes -----------------------------------------------------------------------------


def test_slurm_nodelists_expand():
    assert topology.expand_nodelist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert topology.expand_nodelist("a[1-2]-b[8-9]") == ["a1-b8", "a1-b9", "a2-b8", "a2-b9"]
    assert topology.expand_nodelist("node7") == ["node7"]


def test_topology_comes_from_slurm_only_when_no_flag_is_given():
    env = {"SLURM_JOB_ID": "4321", "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[10-11]",
           "SLURM_GPUS_ON_NODE": "8", "SLURM_NTASKS_PER_NODE": "1"}
    none = types.SimpleNamespace(nproc_per_node=None, nnodes=None, node_rank=None, rdzv_endpoint=None, parallel=None)
    topo = topology_options(none, "cuda", env)
    assert topo == {"nproc_per_node": 8, "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "gpu10:29821"}
    assert topology.from_slurm(env, "cpu")["nproc_per_node"] == 1
    flags = types.SimpleNamespace(nproc_per_node=2, nnodes=None, node_rank=None, rdzv_endpoint=None, parallel="fsdp2")
    assert topology_options(flags, "cuda", env) == {"nproc_per_node": 2, "parallel": "fsdp2"}
    assert topology.from_slurm({}, "cuda") == {}
    with pytest.raises(UsageError, match="ntasks-per-node=1"):
        topology.from_slurm({**env, "SLURM_NTASKS_PER_NODE": "8"}, "cuda")


@pytest.mark.parametrize("fields,match", [
    (dict(nproc_per_node=4, batch_size=6), "try 8"),
    (dict(nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "node-rank must be in 0..1"),
    (dict(nnodes=2, batch_size=4), "needs --rdzv-endpoint HOST:PORT"),
    (dict(nnodes=2, batch_size=4, rdzv_endpoint="host"), "needs --rdzv-endpoint"),
    (dict(parallel="zero3"), "--parallel zero3 is not available for PyTorch; use --parallel ddp or fsdp2"),
])
def test_bad_topologies_are_usage_errors(fields, match):
    with pytest.raises(UsageError, match=match):
        RunConfig(workload="resnet50", **fields).validated()


def test_fsdp2_is_pytorch_only():
    """The JAX plugin's capabilities offer data parallelism only."""
    pytest.importorskip("jax")
    with pytest.raises(UsageError, match="--parallel fsdp2 is not available for JAX; use --parallel ddp"):
        RunConfig(workload="resnet50", framework="jax", nproc_per_node=2, batch_size=4, parallel="fsdp2").validated()


def test_cli_rejects_a_batch_that_does_not_split():
    out = run_cli("run", "resnet50", "--nproc-per-node", "3", "--device", "cpu")
    assert out.returncode == 2 and "--batch-size is the global batch" in out.stderr and "try 6" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_torchrun_command_uses_static_rendezvous_across_machines():
    config = RunConfig(workload="resnet50", nnodes=2, node_rank=1, nproc_per_node=4, rdzv_endpoint="n0:29500", batch_size=8)
    cmd = distributed.torchrun_command(config, "c.json", "r.json", "id")
    joined = " ".join(cmd)
    assert "--max-restarts 0" in joined and "--rdzv-backend static --rdzv-endpoint n0:29500 --node-rank 1" in joined
    assert cmd[-4:] == ["tbd.harness.distributed_worker", "c.json", "r.json", "id"]
    assert "--standalone" in distributed.torchrun_command(RunConfig(workload="resnet50", nproc_per_node=2), "c", "r", "i")


def test_comm_time_and_overlap_from_a_gpu_trace():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm", "ts": 0, "dur": 100},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce_Sum_f32_RING_LL", "ts": 50, "dur": 100},
        {"ph": "X", "cat": "kernel", "name": "elementwise", "ts": 160, "dur": 40},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 500},  # ignored: kernels exist
    ]}
    stats = comm_stats(trace, steps=2)
    assert stats["source"] == "gpu kernels"
    assert stats["comm_ms_per_step"] == pytest.approx(0.05) and stats["comm_overlap_pct"] == pytest.approx(50.0)
    assert stats["exposed_comm_ms_per_step"] == pytest.approx(0.025)


def test_comm_time_from_a_cpu_trace_counts_gloo_spans():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 100},
        {"ph": "X", "cat": "cpu_op", "name": "c10d::allreduce_", "ts": 90, "dur": 5},
        {"ph": "X", "cat": "user_annotation", "name": "gloo:all_reduce", "ts": 95, "dur": 20},
    ]}
    stats = comm_stats(trace, steps=1)
    assert stats["source"] == "cpu ops" and stats["comm_ms_per_step"] == pytest.approx(0.02)
    assert stats["comm_overlap_pct"] == pytest.approx(25.0)


def _summary(rank: int, step_s: list[float], peak: int) -> dict:
    return {"rank": rank, "local_rank": rank, "node_rank": 0, "host": "h", "pid": 1, "device": "cpu", "device_name": "cpu",
            "step_s": step_s, "memory": {"peak_allocated_bytes": peak}, "comm": None, "environment": {},
            "utilization": {"energy_j": None}}


def test_merge_flags_stragglers_and_never_sums_memory():
    fast, slow = [1.0] + [0.10] * 9, [1.0] + [0.15] * 9
    record = RunRecord(id="x", config={})
    record["samples"] = {"step_s": [max(a, b) for a, b in zip(fast, slow)], "units": [8.0] * 10, "samples": [8.0] * 10}
    record["metrics"] = {"mfu_pct": 40.0}
    merged = merge(record, [_summary(0, fast, 100), _summary(1, slow, 300)], {"nnodes": 1})
    assert merged["distributed"]["stragglers"] == [1]
    assert merged["memory"]["peak_allocated_bytes"] == 300 and len(merged["memory"]["per_rank"]) == 2
    assert merged["metrics"]["mfu_pct"] == pytest.approx(20.0)  # two devices' peak
    assert merged["distributed"]["ranks"][1]["step_time_ms_median"] == pytest.approx(150.0)


def test_the_rank_that_failed_first_is_named():
    tail = ["Root Cause (first observed failure):", "[0]:", "  rank      : 1 (local_rank: 1)", "  exitcode  : -9 (pid: 5)"]
    peer = [{"rank": 0, "kind": "error", "message": "Connection closed by peer", "peer_lost": True}]
    kind, message = distributed._explain(1, peer, tail)
    assert kind == "crash" and message.startswith("rank 1 was killed by signal 9 (SIGKILL: the kernel's out-of-memory killer, most likely) "
                                                  "without reporting an error")
    assert "rank 0 then saw: Connection closed by peer" in message
    timeout = [{"rank": 0, "kind": "error", "message": "Timed out waiting 5000ms for recv", "peer_lost": True}]
    tail_term = tail[:-1] + ["  exitcode  : -15 (pid: 5)"]
    assert distributed._explain(1, timeout, tail_term)[0] == "timeout"
    # Neither rank reported; torchrun's root cause names the rank it stopped (a tie on the second)
    stopped_first = ["Failures:", "[1]:", "  rank      : 1 (local_rank: 1)", "  exitcode  : 17 (pid: 6)",
                     "Root Cause (first observed failure):", "[0]:", "  rank      : 0 (local_rank: 0)", "  exitcode  : -15 (pid: 5)"]
    assert distributed._explain(1, [], stopped_first)[1].startswith("rank 1 exited with code 17 without reporting an error")
    own = peer + [{"rank": 1, "kind": "oom", "message": "out of memory", "peer_lost": False}]
    assert distributed._explain(1, own, tail) == ("oom", "rank 1: out of memory")


def test_scale_computes_efficiency_draws_and_records(tbd_home, monkeypatch):
    """The scale command's own logic, with the runs replaced by records of known throughput."""
    from tbd import cli
    from tbd.commands import run as run_command

    throughput = {1: 10.0, 2: 15.0, 4: 20.0}

    def fake_launch(config, progress=None):
        record = RunRecord(id=f"20260101-00000{config.nproc_per_node}-abcdef", config=config.to_dict())
        record.update(status="ok", workload={"unit": "images"}, metrics={"images_per_s": throughput[config.nproc_per_node], "step_time_ms_p50": 1.0})
        return record

    monkeypatch.setattr(run_command, "launch", fake_launch)
    monkeypatch.setattr(topology, "host_cores", lambda: 4)  # 4 ranks allowed on any test machine
    assert cli.main(["scale", "resnet50", "--nproc", "4,1,2", "--device", "cpu"]) == 0
    records = {r["config"]["nproc_per_node"]: r for r in Store(tbd_home).list()}
    assert {n: r["config"]["batch_size"] for n, r in records.items()} == {1: 4, 2: 8, 4: 16}  # weak scaling
    assert records[2]["scale"]["efficiency_pct"] == pytest.approx(75.0) and records[4]["scale"]["speedup"] == pytest.approx(2.0)
    figure = Path(records[1]["scale"]["figure"])
    assert figure.parent == tbd_home / "figures" and figure.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(next((tbd_home / "scales").glob("*.json")).read_text())
    assert [row["efficiency_pct"] for row in summary["rows"]] == pytest.approx([100.0, 75.0, 50.0])


def test_scale_rejects_topology_flags_and_bad_counts():
    out = run_cli("scale", "resnet50", "--nproc", "1,x", "--device", "cpu")
    assert out.returncode == 2 and "comma-separated integers" in out.stderr
    out = run_cli("scale", "resnet50", "--nproc-per-node", "2", "--device", "cpu")
    assert out.returncode == 2 and "sets the process count itself" in out.stderr
    shown = run_cli("scale", "--help").stdout  # what scale refuses, its help does not offer
    assert not [flag for flag in ("--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-endpoint") if flag in shown], shown
    assert "--parallel" in shown and "--nproc-per-node" in run_cli("run", "--help").stdout


def test_cpu_ranks_far_beyond_the_cores_are_refused_before_anything_runs(tbd_home, monkeypatch, capsys):
    """64 ranks on 2 cores were killed by the OOM killer: run and scale refuse past 2 a core."""
    from tbd import cli
    from tbd.commands import run as run_command

    monkeypatch.setattr(topology, "host_cores", lambda: 2)
    monkeypatch.setattr(run_command, "launch", lambda *a, **k: pytest.fail("nothing may run"))
    for argv, flag in ((["scale", "gpt", "--flavor", "tiny", "--device", "cpu", "--nproc", "1,64"], "--nproc 64"),
                       (["run", "gpt", "--flavor", "tiny", "--device", "cpu", "--nproc-per-node", "5", "-b", "10"], "--nproc-per-node 5")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"tbd: error: {flag} starts") and "use at most 4" in err, err
    assert Store(tbd_home).list() == []
    RunConfig(workload="gpt", flavor="tiny", device="cpu", nproc_per_node=4, batch_size=4).validated()  # 2 a core: allowed


def test_a_failed_rank_record_carries_the_workloads_unit():
    """A failure no rank reported (killed by the kernel) still reads in the workload's unit."""
    config = RunConfig(workload="gpt", flavor="tiny", device="cpu", nproc_per_node=2, batch_size=4).validated()
    record = distributed._failed(config, "r1", "crash", "rank 1 was killed by signal 9", [])
    assert record["workload"]["unit"] == "tokens" and record["status"] == "failed"


def test_merged_comm_is_the_transfer_and_waiting_is_reported_apart():
    """A rank that reaches a collective early shows long NCCL kernels: that is waiting, not
    transfer. The merge takes the rank that waited least and reports the rest as comm_wait."""
    record = RunRecord(id="x", config={})
    record["samples"] = {"step_s": [0.03] * 10, "units": [8.0] * 10, "samples": [8.0] * 10}
    record["metrics"] = {}
    waited_little = {"comm_ms_per_step": 2.0, "exposed_comm_ms_per_step": 1.5, "comm_overlap_pct": 25.0, "window_ms_per_step": 40.0}
    waited_long = {"comm_ms_per_step": 30.0, "exposed_comm_ms_per_step": 20.0, "comm_overlap_pct": 33.0, "window_ms_per_step": 40.0}
    summaries = [{**_summary(0, [0.03] * 10, 1), "comm": waited_little}, {**_summary(1, [0.03] * 10, 1), "comm": waited_long}]
    met = merge(record, summaries, {"nnodes": 1})["metrics"]
    assert met["comm_ms_per_step"] == 2.0 and met["exposed_comm_ms_per_step"] == 1.5 and met["comm_overlap_pct"] == 25.0
    assert met["comm_wait_ms_per_step"] == pytest.approx(28.0)
    assert met["comm_share_pct"] == pytest.approx(5.0)  # 2 ms of a 40 ms profiled step
