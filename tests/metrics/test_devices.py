"""NVML numbers every GPU of the machine; CUDA only the visible ones. These tests check that tbd
reads the GPU a process actually runs on, with a stand-in NVML of four GPUs."""

from tbd.metrics import devices


class FakeNvml:
    uuids = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd"]

    def nvmlDeviceGetCount(self):
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetUUID(self, handle):
        return self.uuids[handle[1]].encode()


def test_without_cuda_visible_devices_indices_match(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.device_handle(FakeNvml(), 1) == ("handle", 1)
    assert devices.visible_count(FakeNvml()) == 4


def test_cuda_index_maps_through_visible_list(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert devices.device_handle(FakeNvml(), 0) == ("handle", 2)
    assert devices.device_handle(FakeNvml(), 1) == ("handle", 3)
    assert devices.visible_count(FakeNvml()) == 2


def test_uuid_prefixes_are_resolved(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cc")
    assert devices.device_handle(FakeNvml(), 0) == ("handle", 2)


def test_empty_list_hides_every_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_count(FakeNvml()) == 0


def test_a_gpu_hidden_by_cuda_visible_devices_is_not_available(monkeypatch):
    monkeypatch.setattr(devices, "_nvml", lambda: FakeNvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not devices.cuda_available() and devices.best_device() == "cpu"  # --device auto must not pick a hidden GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices.cuda_available() and devices.best_device() == "cuda"
