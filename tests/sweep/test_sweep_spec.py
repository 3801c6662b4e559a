"""Sweep specs: TOML files, flags, presets, and errors that name the file, line and key."""

from __future__ import annotations

import pytest

from tbd import registry
from tbd.errors import UsageError
from tbd.sweep import spec as sweep_spec

GOOD = """\
name = "resnet-batches"
workloads = ["resnet50"]
frameworks = ["torch"]
devices = ["cpu"]
precisions = ["fp32", "bf16", "tf32"]
batch_sizes = [16, 4, 8]

[budget]
max_steps = 4
max_time = 5
"""


def test_file_expands_into_lines_with_sorted_batches_and_notes(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    plan = sweep_spec.plan(sweep_spec.load_file(path))
    assert plan.name == "resnet-batches"
    assert [line.base["precision"] for line in plan.lines] == ["fp32", "bf16"]
    assert all(line.batches == [4, 8, 16] for line in plan.lines)
    assert plan.lines[0].base["max_steps"] == 4 and plan.lines[0].base["max_time_s"] == 5.0
    assert plan.num_points == 6
    assert any("tf32 needs a GPU" in n for n in plan.notes)  # tf32 on a CPU is listed as not run
    # The same sweep gets the same id (that is what resume relies on); another sweep another id.
    assert sweep_spec.plan(sweep_spec.load_file(path)).sweep_id == plan.sweep_id
    in_process = sweep_spec.load_file(path)
    in_process.isolate = False  # how points are launched is not part of what is measured
    assert sweep_spec.plan(in_process).sweep_id == plan.sweep_id
    path.write_text(GOOD.replace("[16, 4, 8]", "[4]"))
    assert sweep_spec.plan(sweep_spec.load_file(path)).sweep_id != plan.sweep_id


@pytest.mark.parametrize("text,line,key", [
    (GOOD.replace('precisions = ', 'precison = '), 5, "precison"),
    (GOOD.replace("max_time = 5", "max_tme = 5"), 10, "budget.max_tme"),
    (GOOD.replace("batch_sizes = [16, 4, 8]", "batch_sizes = [16, 0]"), 6, "batch_sizes"),
    (GOOD + "\n[batch_sizes]\n", None, None),  # duplicate key: a TOML syntax error
    (GOOD.replace("batch_sizes = [16, 4, 8]", "[batch_sizes]\nresnet5 = [4]").replace("[budget]\nmax_steps = 4\nmax_time = 5\n", ""), 7, "batch_sizes.resnet5"),
])
def test_bad_files_name_file_line_and_key(tmp_path, text, line, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        sweep_spec.load_file(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if key:
        assert f"{path}:{line}: key '{key}'" in msg, msg
    else:
        assert "not valid TOML" in msg and "line" in msg


@pytest.mark.parametrize("text,line", [
    ('workloads = ["gpt"]\n[budget]\nmax_time = ', 3),  # cut off: tomllib says "at end of document", without a line
    ('workloads = ["gpt"]\n[budget]\nmax_time = \n', 3),
    ('workloads = ["gpt"]\nframeworks ["torch"]\n', 2),  # tomllib says the line in its message
])
def test_a_toml_syntax_error_names_its_line(tmp_path, text, line):
    path = tmp_path / "cut.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        sweep_spec.load_file(path)
    assert str(err.value).startswith(f"{path}:{line}: not valid TOML (") and str(err.value).endswith("; fix the syntax at that line")


@pytest.mark.parametrize("axis,value,message", [
    ("precisions", ["fp32", "fp46"], "unknown precision 'fp46' (did you mean: fp16"),
    ("devices", ["cpu", "tpu"], "unknown device 'tpu' (did you mean: cpu?); valid: auto, cpu, cuda"),
    ("flavors", ["tiny", "tinyy"], "unknown flavor 'tinyy' (did you mean: tiny?); valid: "),
    ("workloads", ["gtp"], "unknown workload 'gtp' (did you mean: gpt?)"),
])
def test_a_name_valid_nowhere_is_refused_before_anything_runs(tmp_path, axis, value, message):
    """Flags and tbd.sweep reach plan(); a file names itself, the line and the key."""
    spec = sweep_spec.SweepSpec(workloads=["gpt"], frameworks=["torch"], devices=["cpu"])
    setattr(spec, axis, value)
    with pytest.raises(UsageError) as err:
        sweep_spec.plan(spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    path = tmp_path / "typo.toml"
    path.write_text(f'frameworks = ["torch"]\n{axis} = {value!r}\ndevices = ["cpu"]\n'.replace("'", '"') if axis != "devices"
                    else f'frameworks = ["torch"]\ndevices = {value!r}\n'.replace("'", '"'))
    with pytest.raises(UsageError) as err:
        sweep_spec.load_file(path)
    assert str(err.value).startswith(f"{path}:2: key '{axis}': {message}")


def test_names_valid_only_in_some_combinations_stay_not_run_notes():
    plan = sweep_spec.plan(sweep_spec.SweepSpec(workloads=["gpt", "a3c"], frameworks=["torch"], flavors=["tiny", "1.3b"],
                                                devices=["cpu"], precisions=["fp32", "fp16"]))
    assert any("fp16 needs a GPU" in n for n in plan.notes) and any("a3c has no flavor '1.3b'" in n for n in plan.notes)
    assert plan.lines


@pytest.mark.parametrize("text,line,key,message", [
    ('[data]\nresnet50 = "./nonexist"\n', 4, "data.resnet50", "names ./nonexist, which does not exist"),
    ('data = "./nonexist"\n', 3, "data", "names ./nonexist, which does not exist"),
    ('[options]\ncompile_mod = "max-autotune"\n', 4, "options.compile_mod", ": unknown torch option 'compile_mod' (did you mean: compile_mode?)"),
    ('[options]\ncompile_mode = "max-autotun"\n', 4, "options.compile_mode", ": compile_mode = 'max-autotun' is not one of default"),
])
def test_a_files_missing_dataset_or_misspelled_option_is_one_line_naming_the_key(tmp_path, monkeypatch, text, line, key, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.toml"
    path.write_text('workloads = ["resnet50"]\nframeworks = ["torch"]\n' + text)
    with pytest.raises(UsageError) as err:
        sweep_spec.load_file(path)
    assert str(err.value).startswith(f"{path}:{line}: key '{key}'{'' if message.startswith(':') else ' '}{message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(UsageError, match=r"did you mean: precisions"):
        sweep_spec.parse_text('precison = ["fp32"]\n', "x.toml")


def test_unknown_workload_and_framework_are_usage_errors():
    with pytest.raises(UsageError, match="unknown workload 'resnet5'"):
        sweep_spec.plan(sweep_spec.SweepSpec(workloads=["resnet5"], devices=["cpu"]))
    with pytest.raises(UsageError, match="unknown framework"):
        sweep_spec.plan(sweep_spec.SweepSpec(workloads=["resnet50"], frameworks=["pytorch"], devices=["cpu"]))


def test_quick_preset_covers_the_registry():
    plan = sweep_spec.plan(sweep_spec.load_preset("quick"))
    expected = {(w, f) for w in registry.workload_names() for f in registry.implementations(w)
                if registry.is_installed(f) and "tiny" in registry.get_spec(w).flavors}
    runnable = {(line.base["workload"], line.base["framework"]) for line in plan.lines}
    not_run = {tuple(n.split(" ", 1)[0].split("/")[:2]) for n in plan.notes}
    assert runnable and runnable | (expected & not_run) == expected  # every pair runs or says why not
    assert all(line.base["flavor"] == "tiny" and line.base["max_time_s"] <= 10 for line in plan.lines)


def test_frameworks_preset_runs_every_workload_in_every_installed_framework():
    plan = sweep_spec.plan(sweep_spec.load_preset("frameworks"))
    pairs = {(line.base["workload"], line.base["framework"]) for line in plan.lines}
    for w in registry.workload_names():
        for f in registry.implementations(w):
            if registry.is_installed(f) and registry.is_workload(w):
                # runs here, or the plan says why not (an extra the workload needs is missing)
                assert (w, f) in pairs or any(n.startswith(f"{w}/{f}") for n in plan.notes), (w, f)
            elif not registry.is_installed(f):
                assert any(n.startswith(f"{w}/{f}") and "not installed" in n for n in plan.notes), (w, f)
    assert {line.base["flavor"] for line in plan.lines} == {"tiny", "paper"}


def test_paper_preset_sweeps_batch_sizes_and_precisions():
    spec = sweep_spec.load_preset("paper")
    assert spec.batch_sizes_per_workload["resnet50"][0] == 4 and spec.batch_sizes_per_workload["resnet50"][-1] >= 64
    assert {"fp32", "bf16"} <= set(spec.precisions)
    plan = sweep_spec.plan(spec)
    assert any(line.base["workload"] == "resnet50" and len(line.batches) >= 5 for line in plan.lines)
    with pytest.raises(UsageError, match="unknown preset 'quik'.*quick"):
        sweep_spec.load_preset("quik")


def test_flag_lists_are_validated():
    assert sweep_spec.parse_int_list("4, 8,16", "--batch-sizes") == [4, 8, 16]
    assert sweep_spec.parse_bool_list("off,on", "--compile") == [False, True]
    with pytest.raises(UsageError, match="--batch-sizes"):
        sweep_spec.parse_int_list("4,x", "--batch-sizes")


def test_a_compile_axis_leaves_out_the_frameworks_that_always_compile():
    pytest.importorskip("jax")
    spec = sweep_spec.SweepSpec(workloads=["gpt"], frameworks=["torch", "jax"], flavors=["tiny"], devices=["cpu"], compile=[False, True])
    plan = sweep_spec.plan(spec)
    assert [(line.base["framework"], line.base["compile"]) for line in plan.lines] == [("torch", False), ("torch", True), ("jax", False)]
    assert [n.split(":")[0] for n in plan.notes] == ["gpt/jax/tiny cpu fp32 +compile"]
    assert "--compile has nothing to switch on for JAX" in plan.notes[0]
