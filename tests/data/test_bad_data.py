"""Bad data: one line naming the file and exit 2 before a run starts; a corrupt sample met while
training is skipped, replaced and counted in the record."""

import shutil
from pathlib import Path


from tbd.cli import main
from tbd.config import RunConfig
from tbd.harness.runner import execute


def run_error(capsys, *args) -> str:
    """`tbd run ARGS` in this process: the exit code must be 2, with one line on stderr."""
    assert main(["run", *args, "--device", "cpu", "--in-process"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tbd: error:") and len(err.splitlines()) == 1, err
    return err


def copy(datasets, workload, tmp_path) -> Path:
    return Path(shutil.copytree(datasets[workload], tmp_path / workload))


def test_corrupt_jpeg_is_named_before_the_run(datasets, tmp_path, capsys):
    root = copy(datasets, "resnet50", tmp_path)
    victim = sorted((root / "train").rglob("*.JPEG"))[3]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated mid-scan
    assert str(victim) in run_error(capsys, "resnet50", "--data", str(root))


def test_missing_annotation_is_named(datasets, tmp_path, capsys):
    root = copy(datasets, "faster_rcnn", tmp_path)
    (root / "VOC2007" / "Annotations" / "000005.xml").unlink()
    err = run_error(capsys, "faster_rcnn", "--data", str(root))
    assert "000005.xml" in err and "missing annotation" in err


def test_broken_annotation_is_named(datasets, tmp_path, capsys):
    root = copy(datasets, "faster_rcnn", tmp_path)
    (root / "VOC2007" / "Annotations" / "000002.xml").write_text("<annotation><size>")
    assert "000002.xml" in run_error(capsys, "faster_rcnn", "--data", str(root))


def test_empty_folder_and_wrong_layout(datasets, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "is empty" in run_error(capsys, "resnet50", "--data", str(tmp_path / "empty"))
    loose = tmp_path / "loose"
    loose.mkdir()
    for f in list((Path(datasets["resnet50"]) / "train").rglob("*.JPEG"))[:3]:
        shutil.copy(f, loose)
    assert "no class folders" in run_error(capsys, "resnet50", "--data", str(loose))
    assert "no such file or folder" in run_error(capsys, "resnet50", "--data", str(tmp_path / "nowhere"))
    assert "train.* files" in run_error(capsys, "seq2seq", "--data", str(Path(datasets["resnet50"])))


def test_corrupt_flac_and_audio_rate(datasets, tmp_path, capsys):
    root = copy(datasets, "deepspeech2", tmp_path)
    wav = sorted(root.rglob("*.wav"))[0]
    wav.with_suffix(".flac").write_bytes(b"RIFF not a flac file")
    wav.unlink()
    err = run_error(capsys, "deepspeech2", "--data", str(root))
    assert str(wav.with_suffix(".flac")) in err and ("fLaC" in err or "soundfile" in err)


def test_mismatched_text_and_tokens_beyond_the_vocabulary(datasets, tmp_path, capsys):
    root = copy(datasets, "seq2seq", tmp_path)
    (root / "train.vi").write_text("one line only\n")
    assert "train.vi" in run_error(capsys, "seq2seq", "--data", str(root))
    import numpy as np

    (tmp_path / "big.bin").write_bytes(np.full(1000, 60000, np.uint16).tobytes())
    assert "beyond the flavor's vocabulary" in run_error(capsys, "gpt", "--data", str(tmp_path / "big.bin"))


def test_options_that_do_not_apply(datasets, capsys):
    assert "drop --data" in run_error(capsys, "a3c", "--data", datasets["resnet50"])
    assert "--device cuda" in run_error(capsys, "resnet50", "--data", datasets["resnet50"], "--decode", "gpu")
    assert "ImageNet-style" in run_error(capsys, "seq2seq", "--data", datasets["seq2seq"], "--decode", "gpu")
    assert "add --data" in run_error(capsys, "resnet50", "--workers", "2")
    assert "make no batch of 320" in run_error(capsys, "wgan", "--data", datasets["resnet50"] + "/train/n00000000", "-b", "64")


def test_corrupt_sample_mid_run_is_skipped_and_counted(tmp_path, monkeypatch):
    """A file the check's sample missed (it decodes SCAN_SAMPLE files spread over the dataset;
    2 here) is replaced by the next sample when training meets it; the record counts and names it."""
    from tbd import registry
    from tbd.data import base, recipes

    monkeypatch.setattr(base, "SCAN_SAMPLE", 2)
    root = tmp_path / "images"
    recipes.make(registry.get_spec("resnet50"), root, 8, dict(registry.get_spec("resnet50").flavor("tiny").hparams))
    files = sorted((root / "train").rglob("*.JPEG"), key=lambda p: (p.parent.name, p.name))  # the dataset's order
    unchecked = sorted(set(range(len(files))) - set(base.spread(len(files))))
    victim = files[unchecked[0]]
    victim.write_bytes(b"\xff\xd8 broken")
    # 2 steps of 4 images cover the 8 images once; the check's sample does not include the victim
    config = RunConfig(workload="resnet50", data=str(root), workers=0, max_steps=2, min_timed_steps=1, isolate=False).validated()
    record = execute(config)
    assert record.status != "failed", record.error
    assert record.metrics["data_skipped_samples"] >= 1
    assert any(str(victim) in name for name in record.method["data_skipped_files"])
    # the record says how the data came and how long each step waited for it
    assert record.method["data"]["format"] == "imagenet" and record.method["data"]["samples"] == 8
    assert 0 <= record.metrics["input_wait_host_pct"] <= 100 and record.metrics["input_wait_host_ms_per_step"] >= 0
    assert len(record.samples["input_wait_s"]) == len(record.samples["step_s"]) == 2
