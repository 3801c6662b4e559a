"""`tbd data make | check | bench | resize`, and the `data` key of sweep files."""

import json
from pathlib import Path

from tbd.cli import main
from tbd.sweep.spec import parse_text, plan


def test_make_check_bench(tmp_path, capsys):
    out = tmp_path / "speech"
    assert main(["data", "make", "deepspeech2", "--out", str(out), "--size", "8"]) == 0
    assert "librispeech" in capsys.readouterr().out and len(list(out.rglob("*.wav"))) == 8
    assert main(["data", "make", "deepspeech2", "--out", str(out)]) == 2  # not over an existing dataset
    assert "not an empty folder" in capsys.readouterr().err
    for unusable in (next(out.rglob("*.wav")), "/proc/tbd-cannot-be-made"):  # a file; a folder that cannot be created
        assert main(["data", "make", "deepspeech2", "--out", str(unusable)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out" in err, err
    assert main(["data", "check", "deepspeech2", "--data", str(out), "--device", "cpu", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["format"] == "librispeech" and facts["samples"] == 8 and facts["batches_per_epoch"] == 2
    assert main(["data", "bench", "deepspeech2", "--data", str(out), "--device", "cpu", "--workers", "0", "--batches", "3",
                 "--warmup", "1", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["utterances_per_s"] > 0 and bench["batches"] == 3 and bench["method"]["format"] == "librispeech"


def test_resize(datasets, tmp_path, capsys):
    assert main(["data", "resize", "--data", datasets["resnet50"], "--side", "40", "--out", str(tmp_path / "small"), "--limit", "8"]) == 0
    assert "wrote 8 images in 4 classes" in capsys.readouterr().out
    assert main(["data", "resize", "--data", datasets["resnet50"], "--side", "40", "--out", "/proc/tbd-cannot-be-made"]) == 2
    assert "cannot create /proc/tbd-cannot-be-made" in capsys.readouterr().err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("tbd: error:") and len(err.splitlines()) == 1, err
    return err


def test_resize_of_a_corrupt_image_names_it_and_leaves_nothing(datasets, tmp_path, capsys):
    """One file that does not decode: one line naming it, and no half-copy to block the rerun."""
    import shutil

    root = Path(shutil.copytree(datasets["resnet50"], tmp_path / "bad"))
    victim = sorted(root.rglob("*.JPEG"))[9]
    victim.write_bytes(victim.read_bytes()[:100])
    out = tmp_path / "small"
    assert main(["data", "resize", "--data", str(root), "--side", "16", "--out", str(out), "--limit", "16"]) == 2
    err = one_line_error(capsys)
    assert str(victim) in err and "remove or replace" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # neither --out nor the hidden folder it was written in
    (tmp_path / "empty").mkdir()  # an empty --out given by the user stays, empty
    assert main(["data", "resize", "--data", str(root), "--side", "16", "--out", str(tmp_path / "empty")]) == 2
    assert not any((tmp_path / "empty").iterdir())
    victim.unlink()
    assert main(["data", "resize", "--data", str(root), "--side", "16", "--out", str(out)]) == 0
    assert len(list(out.rglob("*.JPEG"))) == 15 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_data_errors_name_real_commands(tmp_path, capsys):
    assert main(["data", "resize", "--data", str(tmp_path / "none"), "--side", "16", "--out", str(tmp_path / "x")]) == 2
    assert "'tbd data make resnet50 --out DIR' writes one" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["data", "resize", "--data", str(tmp_path / "empty"), "--side", "16", "--out", str(tmp_path / "x")]) == 2
    err = one_line_error(capsys)
    assert "tbd data resize reads an ImageNet-style folder" in err and "tbd data make resnet50" in err
    assert main(["data", "make", "a3c", "--out", str(tmp_path / "x")]) == 2
    err = one_line_error(capsys)
    assert "--data" not in err and "none to make" in err and "resnet50" in err
    assert not (tmp_path / "x").exists()


def test_sweep_file_data_key(datasets):
    spec = parse_text(f'workloads = ["resnet50", "gpt"]\nframeworks = ["torch"]\ndevices = ["cpu"]\n[data]\nresnet50 = "{datasets["resnet50"]}"\n', "s.toml")
    lines = {line.base["workload"]: line for line in plan(spec).lines}
    assert lines["resnet50"].base["data"] == datasets["resnet50"] and "data=" in lines["resnet50"].label
    assert lines["resnet50"].config(4).workers >= 1  # the points run unvalidated: the loader's default is filled in
    assert "data" not in lines["gpt"].base  # no path for gpt: synthetic, and its plan unchanged
    bad = f'workloads = ["seq2seq"]\nframeworks = ["torch"]\ndevices = ["cpu"]\ndata = "{datasets["resnet50"]}"\n'
    notes = plan(parse_text(bad, "s.toml")).notes
    assert any("train.* files" in n for n in notes)  # the dataset's check names the problem
