"""Each format end to end on generated data: the check, a batch plan, samples and collation."""

from pathlib import Path

import numpy as np
import pytest

from tbd import registry
from tbd.data import recipes, speech
from tbd.data.base import BatchStream
from tests.data.conftest import DATA_WORKLOADS, tiny


def first_batch(workload, path, batch, decode="cpu", seed=0):
    spec = registry.get_spec(workload)
    ds = recipes.open_dataset(spec, path, tiny(workload), batch, seed, decode)
    keys = next(iter(BatchStream(ds)))
    return ds, ds.batch([ds[k] for k in keys])


@pytest.mark.parametrize("workload", DATA_WORKLOADS)
def test_every_format_reads_what_make_writes(datasets, workload):
    batch = registry.get_spec(workload).flavor("tiny").batch_size
    ds, b = first_batch(workload, datasets[workload], batch)
    assert b["skipped"] == []
    assert ds.facts["format"] == registry.get_spec(workload).data_format
    again = first_batch(workload, datasets[workload], batch)[1]  # same seed: the same batch, augmentation included
    for key, value in b.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, again[key])


def test_imagenet_batch_is_cropped_flipped_uint8(datasets):
    ds, b = first_batch("resnet50", datasets["resnet50"], 4)
    assert b["images"].shape == (4, 32, 32, 3) and b["images"].dtype == np.uint8
    assert b["labels"].dtype == np.int64 and set(b["labels"]) <= set(range(4))
    epochs = {tuple(ds[(0, e)]["image"].ravel()[:64]) for e in range(4)}
    assert len(epochs) > 1  # each epoch draws its own crop and flip


def test_gpu_decode_path_matches_cpu_decode(datasets):
    """The GPU path's bytes + crop boxes, decoded and cropped by torch (here on the CPU), give the
    pixels the CPU path gives (same crops; PIL's and torch's resampling differ slightly)."""
    import torch

    from tbd.frameworks.torch.data import decode_on_device, to_tensors

    _, raw = first_batch("resnet50", datasets["resnet50"], 4, decode="gpu")
    _, pixels = first_batch("resnet50", datasets["resnet50"], 4, decode="cpu")
    assert raw["jpeg"].dtype == np.uint8 and raw["jpeg_sizes"].sum() == raw["jpeg"].size
    decoded = decode_on_device(to_tensors(raw), torch.device("cpu"))
    assert decoded["images"].shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(decoded["labels"].numpy(), pixels["labels"])
    assert float((decoded["images"] - torch.from_numpy(pixels["images"]).float()).abs().mean()) < 4.0


def test_flac_speech_reads_as_the_same_audio_as_wav(tmp_path):
    """LibriSpeech ships FLAC: `tbd data make deepspeech2 --audio flac` writes real FLAC (lossless,
    16-bit), which reads back to the samples of the same utterances written as WAV (within the
    16-bit rounding of each writer) and batches like them."""
    pytest.importorskip("soundfile", reason="FLAC needs the data extra (soundfile); `make test` installs it")
    spec = registry.get_spec("deepspeech2")
    hp = tiny("deepspeech2")
    flac = Path(recipes.make(spec, tmp_path / "flac", 6, hp, seed=3, audio="flac")["path"])
    wav = Path(recipes.make(spec, tmp_path / "wav", 6, hp, seed=3, audio="wav")["path"])
    flac_files, wav_files = sorted(flac.rglob("*.flac")), sorted(wav.rglob("*.wav"))
    assert len(flac_files) == len(wav_files) == 6 and not list(flac.rglob("*.wav"))
    assert flac_files[0].read_bytes()[:4] == b"fLaC"
    for f, w in zip(flac_files, wav_files):
        np.testing.assert_allclose(speech.read_audio(f), speech.read_audio(w), atol=2 / 32768)
    _, from_flac = first_batch("deepspeech2", str(flac), 4)
    _, from_wav = first_batch("deepspeech2", str(wav), 4)
    assert from_flac["skipped"] == []
    for key, value in from_wav.items():
        if isinstance(value, np.ndarray):
            assert from_flac[key].shape == value.shape and from_flac[key].dtype == value.dtype


def test_batched_gpu_crop_resize_matches_per_image_antialiased_resize():
    """The GPU path resizes every crop of a batch in one roi_align (an area filter); a per-image
    antialiased bilinear resize (torchvision's RandomResizedCrop) gives nearly the same pixels,
    for crops smaller and larger than the output, flipped or not."""
    import io

    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    from tbd.frameworks.torch.data import decode_on_device

    rng = np.random.default_rng(0)
    files, crops = [], []
    for _ in range(6):
        height, width = (int(v) for v in rng.integers(120, 300, 2))
        yy, xx = np.mgrid[0:height, 0:width]
        picture = np.stack([xx * 255 / width, yy * 255 / height, 128 + 100 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], -1).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "JPEG", quality=90)
        files.append(np.frombuffer(buffer.getvalue(), np.uint8))
        h, w = int(rng.integers(30, height)), int(rng.integers(30, width))
        crops.append([int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w])
    flip = torch.tensor([False, True] * 3)
    host = {"jpeg": torch.from_numpy(np.concatenate(files)), "jpeg_sizes": torch.tensor([len(f) for f in files]),
            "crop": torch.tensor(crops, dtype=torch.int32), "flip": flip, "labels": torch.arange(6), "image_size": 64}
    batched = decode_on_device(host, torch.device("cpu"))["images"].permute(0, 3, 1, 2)
    decoded = decode_jpeg(list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist())), mode=ImageReadMode.RGB)
    one_by_one = torch.stack([F.interpolate(img[None, :, t : t + h, x : x + w].float(), size=(64, 64), mode="bilinear", antialias=True)[0]
                              for img, (t, x, h, w) in zip(decoded, crops)])
    one_by_one = torch.where(flip[:, None, None, None], one_by_one.flip(-1), one_by_one)
    assert batched.shape == (6, 3, 64, 64)
    assert float((batched - one_by_one).abs().mean()) < 1.0  # of 255 levels


def test_voc_batches_group_orientation_and_flip_boxes(datasets):
    ds, b = first_batch("faster_rcnn", datasets["faster_rcnn"], 2)
    for batch in ds.plan(0):
        assert len({ds.sizes[i][0] >= ds.sizes[i][1] for i in batch}) == 1  # one orientation per batch
    for img, boxes, labels in zip(b["images"], b["boxes"], b["labels"]):
        h, w, _ = img.shape
        assert boxes.shape == (len(labels), 4) and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert labels.min() >= 1 and labels.max() < tiny("faster_rcnn")["num_classes"]


def test_parallel_text_buckets_and_shifts(datasets):
    ds, b = first_batch("seq2seq", datasets["seq2seq"], 4)
    assert list(b["src_lens"]) == sorted(b["src_lens"], reverse=True)  # packed RNNs want longest first
    assert (b["tgt_in"][:, 0] == 2).all()  # <s>
    np.testing.assert_array_equal(b["tgt_in"][:, 1:][b["tgt_out"][:, 1:] != 0], b["tgt_out"][:, :-1][b["tgt_out"][:, 1:] != 0])
    tokens, t_batch = first_batch("transformer", datasets["transformer"], 40)
    assert len(t_batch["src"]) * max(t_batch["src"].shape[1], t_batch["tgt_out"].shape[1]) <= 40  # the token budget


def test_token_windows_and_spectrograms(datasets):
    _, b = first_batch("gpt", datasets["gpt"], 4)
    assert b["tokens"].shape == (4, tiny("gpt")["block_size"] + 1)
    _, s = first_batch("deepspeech2", datasets["deepspeech2"], 4)
    assert s["spec"].shape[:3] == (4, 1, 161) and s["spec"].shape[3] == s["frames"].max()
    assert s["n_chars"].sum() == len(s["targets"]) and s["targets"].min() >= 1 and s["targets"].max() <= 28
    one_second = speech.spectrogram(np.zeros(speech.RATE, np.float32))
    assert one_second.shape == (161, 99)  # 100 frames per second of audio (n_fft 320, hop 160)


def test_gpt_raw_text_with_a_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    spec = registry.get_spec("gpt")
    made = recipes.make(spec, tmp_path / "text", 8, tiny("gpt"), text_format="txt")
    assert 0 < made["tokenizer_vocab"] <= tiny("gpt")["vocab"]
    _, b = first_batch("gpt", tmp_path / "text", 4)
    assert b["tokens"].shape == (4, tiny("gpt")["block_size"] + 1) and b["tokens"].max() < made["tokenizer_vocab"]


def test_wgan_batch_holds_every_critic_iteration(datasets):
    hp = tiny("wgan")
    _, b = first_batch("wgan", datasets["wgan"], 8)
    assert b["images"].shape == (8 * hp["n_critic"], hp["image_size"], hp["image_size"], 3)


def test_formats_implement_the_abstract_dataset():
    """A format that forgets a method fails when it is made, not mid-run; the formats of the
    data workloads give them all."""
    from tbd.data import base, images, text, voc  # noqa: F401  (speech is imported above)

    def subclasses(cls):
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    formats = {c for c in subclasses(base.Dataset) if c.__module__.startswith("tbd.data.")}
    assert {c.format for c in formats} == {registry.get_spec(w).data_format for w in DATA_WORKLOADS}
    assert all(not c.__abstractmethods__ for c in formats)

    class NoCollate(base.Dataset):
        def __len__(self):
            return 1

        def load(self, index, rng):
            return {}

        def name_of(self, index):
            return "x"

    with pytest.raises(TypeError, match="collate"):
        NoCollate(".", batch_size=1)
