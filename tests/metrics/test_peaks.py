"""Device names as NVML reports them must find their own peak entry, whatever the order of PEAKS:
a wrong entry gives a wrong MFU silently, which is worse than none."""

import random

import pytest

from tbd.metrics import peaks

# NVML device name -> the PEAKS key it must resolve to.
NVML_NAMES = {
    "NVIDIA H200": "h200",
    "NVIDIA H20": "h20",
    "NVIDIA H100 80GB HBM3": "h100",
    "NVIDIA H100 PCIe": "h100 pcie",
    "NVIDIA H100 NVL": "h100 nvl",
    "NVIDIA A100-SXM4-80GB": "a100",
    "NVIDIA L40S": "l40s",
    "NVIDIA A10G": "a10g",
    "Tesla V100-SXM2-16GB": "v100",
    "Tesla T4": "t4",
}


def entry(key):
    return dict(peaks.PEAKS)[key]


@pytest.mark.parametrize("device_name, key", NVML_NAMES.items())
def test_nvml_names_map_to_their_entry(device_name, key):
    assert peaks.lookup(device_name) is entry(key)
    flops, source = peaks.peak_flops(device_name, "fp16")
    assert flops == entry(key).tflops["fp16"] * 1e12
    assert source == entry(key).source


@pytest.mark.parametrize("seed", range(5))
def test_match_does_not_depend_on_table_order(monkeypatch, seed):
    shuffled = list(peaks.PEAKS)
    random.Random(seed).shuffle(shuffled)
    monkeypatch.setattr(peaks, "PEAKS", shuffled)
    for device_name, key in NVML_NAMES.items():
        assert peaks.lookup(device_name) is entry(key), device_name


@pytest.mark.parametrize("order", [list, lambda table: list(reversed(table))])
def test_short_keys_do_not_catch_longer_model_numbers(monkeypatch, order):
    """"h20" is a prefix of "h200" and "h100" of "h100 pcie": both orders must still pick right."""
    monkeypatch.setattr(peaks, "PEAKS", order(peaks.PEAKS))
    assert peaks.lookup("NVIDIA H200") is entry("h200")
    assert peaks.lookup("NVIDIA H100 PCIe") is entry("h100 pcie")


def test_unknown_device_has_no_peak():
    flops, reason = peaks.peak_flops("NVIDIA GeForce GTX 1080", "fp32")
    assert flops is None
    assert "unknown peak" in reason
    assert peaks.lookup("NVIDIA GeForce GTX 1080") is None


def test_missing_precision_gives_a_reason():
    flops, reason = peaks.peak_flops("Tesla T4", "bf16")
    assert flops is None
    assert "bf16" in reason


def test_no_device_name():
    assert peaks.lookup(None) is None
    assert peaks.lookup("") is None
    flops, reason = peaks.peak_flops(None, "fp32")
    assert flops is None
    assert "unknown peak" in reason
