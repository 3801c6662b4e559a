"""`tbd compare`: ratios with bootstrap CIs, pairing, environment warnings, regression exit codes."""

from __future__ import annotations

import json

import numpy as np
from sweep_fakes import fake_record

from tbd.cli import main
from tbd.config import RunConfig
from tbd.report import compare as cmp
from tbd.results.store import Store


def test_ratio_ci_covers_the_true_ratio():
    rng = np.random.default_rng(1)
    a = 100 * (1 + 0.03 * rng.standard_normal(40))
    b = 150 * (1 + 0.03 * rng.standard_normal(40))
    ratio, lo, hi = cmp.ratio_ci(a, b)
    assert lo < 1.5 < hi and abs(ratio - 1.5) < 0.03 and hi - lo < 0.1
    assert np.isnan(cmp.ratio_ci(a, b[:1])[1])  # one sample: no interval, not a made-up one


def test_runs_fed_from_disk_compare_window_rates_not_median_steps():
    # Both runs step at 20 batches/s when a batch is ready; B waits 0.45 s every 4th step, A every 8th.
    # The medians call them equal; the wall clock says B is slower: 8.0 vs 11.4 batches/s.
    def fed(pattern):
        steps = [0.5] + pattern * (96 // len(pattern))
        return {"samples": {"step_s": steps, "units": [1.0] * len(steps), "input_wait_s": [0.0] * len(steps)},
                "metrics": {"warmup_steps": 1}}

    a, b = fed([0.05] * 7 + [0.5]), fed([0.05] * 3 + [0.5])
    assert cmp.ratio_ci(cmp.steady_rates(a), cmp.steady_rates(b))[0] == 1.0
    ratio, lo, hi = cmp.throughput_ratio_ci(a, b)
    assert abs(ratio - (1 / 0.1625) / (1 / 0.10625)) < 1e-9 and lo < ratio < hi < 1.0
    synthetic = {k: v for k, v in a.items()} | {"samples": {k: v for k, v in a["samples"].items() if k != "input_wait_s"}}
    assert cmp.throughput_ratio_ci(synthetic, synthetic)[0] == 1.0  # no loader: median steps, as before


def test_compare_uses_the_statistic_the_record_names_and_whole_rotations():
    # a3c-like runs (constant units, one slow round in four): their records say "window", so the
    # ratio is of window rates even with no loader and equal units per step.
    def run(slow):
        steps = [0.5] + [0.1, 0.1, 0.1, slow] * 24
        return {"samples": {"step_s": steps, "units": [1.0] * len(steps)}, "metrics": {"warmup_steps": 1},
                "method": {"throughput_statistic": "window"}}

    ratio = cmp.throughput_ratio_ci(run(0.3), run(0.5))[0]
    assert abs(ratio - 0.6 / 0.8) < 1e-9
    # Two resident batches of different sizes, rotated: the bootstrap resamples whole rotations,
    # so equal runs with 1% timing noise compare within a few percent although their step
    # times differ 3x between the batches.
    rng = np.random.default_rng(5)

    def rotated():
        times = [0.5] + [(0.1 if i % 2 else 0.3) * (1 + 0.01 * rng.standard_normal()) for i in range(100)]
        return {"samples": {"step_s": times, "units": [5.0] + [10.0 if i % 2 else 12.0 for i in range(100)]},
                "metrics": {"warmup_steps": 1}}

    ratio, lo, hi = cmp.throughput_ratio_ci(rotated(), rotated())
    assert lo < 1.0 < hi and hi - lo < 0.02


def _save_sweep(store, name, rate, device="cpu", hostname="host-a", torch_version="2.14.1"):
    records = []
    for b in (4, 8):
        r = fake_record(RunConfig("resnet50", device=device, batch_size=b), rate=rate, hostname=hostname, torch_version=torch_version)
        r["sweep"] = {"id": f"id-{name}", "name": name, "point": b}
        store.save(r)
        records.append(r)
    store.save_sweep(f"id-{name}", name, {})
    return records


def test_pairs_across_the_field_that_differs_and_warns_on_environment():
    a = [fake_record(RunConfig("resnet50", batch_size=b), hostname="h1") for b in (4, 8)]
    b = [fake_record(RunConfig("resnet50", batch_size=b, precision="bf16"), hostname="h2", torch_version="2.15.0") for b in (4, 8, 16)]
    pairs, across, lonely = cmp.pair_up(a, b)
    assert across == ["precision"] and [p.label for p in pairs] == ["resnet50/torch/tiny/cpu/bs4", "resnet50/torch/tiny/cpu/bs8"]
    assert lonely == ["resnet50/torch/tiny/cpu/bs16 (only in B)"]
    warnings = cmp.environment_warnings(a, b)
    assert any(w.startswith("host differs") for w in warnings) and any("library torch differs" in w for w in warnings)


def test_fail_if_slower_exits_1_on_regression_and_0_otherwise(tbd_home, capsys):
    store = Store()
    _save_sweep(store, "old", rate=100)
    _save_sweep(store, "new", rate=80, torch_version="2.15.0")  # 20% slower
    assert main(["compare", "old", "new"]) == 0
    out = capsys.readouterr().out
    assert "0.80" in out and "library torch differs" in out
    assert main(["compare", "old", "new", "--fail-if-slower", "10"]) == 1
    assert "regression: 2 point(s)" in capsys.readouterr().out
    assert main(["compare", "old", "new", "--fail-if-slower", "30"]) == 0


def test_saved_baseline_compares_like_the_sweep(tbd_home, tmp_path, capsys):
    store = Store()
    _save_sweep(store, "base", rate=100)
    _save_sweep(store, "cand", rate=101)
    path = tmp_path / "base.json"
    assert main(["compare", "--save-baseline", str(path), "base"]) == 0
    assert json.loads(path.read_text())["format"] == cmp.BASELINE_FORMAT
    assert main(["compare", str(path), "cand", "--fail-if-slower", "5"]) == 0
    assert "no point of B is more than 5% slower" in capsys.readouterr().out
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    assert main(["compare", str(bogus), "cand"]) == 2
    assert "not a tbd baseline" in capsys.readouterr().err
    assert main(["compare", "nothing-like-this", "cand"]) == 2


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("tbd: error:") and len(err.splitlines()) == 1, err
    return err


def test_save_baseline_keeps_an_existing_file_and_saves_one_thing(tbd_home, tmp_path, capsys):
    store = Store()
    _save_sweep(store, "s1", rate=100)
    _save_sweep(store, "s2", rate=90)
    path = tmp_path / "b.json"
    assert main(["compare", "--save-baseline", str(path), "s1", "s2"]) == 2  # s2 would be ignored
    assert "drop 's2'" in one_error(capsys) and not path.exists()
    assert main(["compare", "--save-baseline", str(path), "s1"]) == 0
    saved = path.read_text()
    assert main(["compare", "--save-baseline", str(path), "s2"]) == 2
    assert "--force" in one_error(capsys) and path.read_text() == saved  # the old baseline is intact
    assert main(["compare", "--save-baseline", str(path), "s2", "--force"]) == 0
    assert json.loads(path.read_text())["source"].startswith("sweep s2")
    assert main(["compare", "s1", "s2", "--force"]) == 2
    assert "only applies to --save-baseline" in one_error(capsys)


def test_fail_if_slower_is_a_percentage_below_100(tbd_home, capsys):
    store = Store()
    _save_sweep(store, "old", rate=100)
    _save_sweep(store, "new", rate=1)
    for pct in ("100", "150"):
        assert main(["compare", "old", "new", "--fail-if-slower", pct]) == 2
        assert "below 100" in one_error(capsys)
    assert main(["compare", "old", "new", "--fail-if-slower", "98"]) == 1  # 99% slower is a regression


def test_libraries_only_one_side_used_are_not_differences():
    a = [fake_record(RunConfig("resnet50", batch_size=4))]
    b = [fake_record(RunConfig("resnet50", batch_size=4))]
    a[0]["environment"]["libraries"] = {**a[0]["environment"]["libraries"], "jax": "0.10.2"}
    assert not [w for w in cmp.environment_warnings(a, b) if "jax" in w]
    b[0]["environment"]["libraries"] = {**b[0]["environment"]["libraries"], "jax": "0.10.3"}
    assert "library jax differs: A 0.10.2 vs B 0.10.3" in cmp.environment_warnings(a, b)


def test_no_significance_on_unconverged_pairs_unless_asked(tbd_home, capsys, monkeypatch):
    """B is clearly faster, but one side did not converge: no "faster" verdict until --allow-unconverged."""
    monkeypatch.setenv("COLUMNS", "200")  # the verdicts whole on one line (pytest-xdist sets 80)
    store = Store()
    _save_sweep(store, "old", rate=100.0)
    new = _save_sweep(store, "new", rate=150.0)
    new[0]["status"] = "unconverged"
    new[0]["method"] = {"convergence": {"status": "unconverged", "reason": "CI +-14% when the budget ran out"}}
    store.save(new[0])
    assert main(["compare", "old", "new"]) == 0
    out = capsys.readouterr().out
    assert "not converged (B unconverged): no verdict" in out and out.count("faster (CI excludes 1)") == 1
    assert "bs4" in out and "bs8" in out  # row keys are whole
    assert main(["compare", "old", "new", "--allow-unconverged"]) == 0
    assert capsys.readouterr().out.count("faster (CI excludes 1)") == 2


def test_compare_as_json_says_the_same_as_the_table(tbd_home, capsys):
    import json

    store = Store()
    _save_sweep(store, "old", rate=100)
    _save_sweep(store, "new", rate=80)
    assert main(["compare", "old", "new", "--json", "--fail-if-slower", "10"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert len(out["pairs"]) == 2 and all(abs(p["ratio"] - 0.8) < 0.01 for p in out["pairs"])
    assert out["regressions"] == [p["point"] for p in out["pairs"]] and out["fail_if_slower_pct"] == 10
    assert all(p["verdict"] and "[" not in p["verdict"] for p in out["pairs"])  # plain text, no markup
