"""The forward engine: no probe pass, lesions in provenance, device context, thread policy, index checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import neurocnn as nc
from neurocnn import forward, lesions, rsa
from neurocnn._validation import check_index
from neurocnn.exceptions import IndexOutOfRangeError, InvalidDataError, UnknownNameError

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class _Counted(nn.Module):
    """conv -> relu -> conv -> global pool; counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1)


def _images(n: int = 10, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size, 3)).astype(np.float32)


def test_no_probe_pass_and_shapes_from_real_batches():
    net = _Counted()
    subject = nc.VirtualSubject(net, preprocessing=IDENTITY, name="counted")
    acts = subject.activations(_images(10), ["conv1", "conv2"], batch_size=4, progress=False)
    assert net.calls == 3  # one pass per batch of 4, none spent on a probe image
    assert subject.output_shape("conv2", (8, 8)) == (2, 8 - 2, 8 - 2)  # cached from the real batches
    assert net.calls == 3
    with torch.no_grad():  # oracle: a plain forward pass
        x = torch.as_tensor(_images(10)).permute(0, 3, 1, 2)
        want = net.conv2(net.relu(net.conv1(x))).numpy()
    np.testing.assert_allclose(acts["conv2"].values, want, rtol=1e-6, atol=1e-6)


def test_module_run_twice_is_refused_after_the_first_batch():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    subject = nc.VirtualSubject(Twice(), preprocessing=IDENTITY, name="twice")
    with pytest.raises(UnknownNameError, match="runs 2 times"):
        subject.activations(_images(2), "conv", progress=False)


def test_lesions_live_on_the_subject_and_in_provenance():
    subject = nc.VirtualSubject(_Counted(), preprocessing=IDENTITY, name="counted")
    intact = subject.activations(_images(4), "conv2", progress=False)
    assert intact.attrs["lesions"] == "none"
    lesion = lesions.knockout(subject, "conv1", [1, 3])
    with lesion:
        assert subject.lesions == [lesion] == lesions.active_lesions(subject)
        hit = subject.activations(_images(4), "conv2", progress=False)
    assert subject.lesions == []
    assert "knockout" in hit.attrs["lesions"] and "lesion_layer=conv1" in hit.attrs["lesions"]
    assert "units_sha256=" in hit.attrs["lesions"]
    assert hit.attrs["weights_sha256"] == intact.attrs["weights_sha256"]
    assert hit.attrs["state_sha256"] != intact.attrs["state_sha256"]
    other = lesions.knockout(subject, "conv1", [0, 3])  # same count, other units: another state
    with other:
        assert subject.provenance("conv2")["state_sha256"] != hit.attrs["state_sha256"]
    assert subject.provenance("conv2")["state_sha256"] == intact.attrs["state_sha256"]


def test_model_on_moves_back_after_an_error():
    net = nn.Linear(2, 2)
    home = torch.device("cpu")
    calls = []
    net.to = lambda device: calls.append(torch.device(device)) or net  # record moves
    with pytest.raises(RuntimeError, match="boom"):
        with forward.model_on(net, "meta", home):
            raise RuntimeError("boom")
    assert calls == [torch.device("meta"), home]
    calls.clear()
    with forward.model_on(net, None, home) as run:
        assert run == home
    assert calls == []  # already there: no move


def test_thread_policy(monkeypatch):
    assert forward.available_cpus() >= 1
    before = torch.get_num_threads()
    try:
        forward.set_num_threads(1)
        assert torch.get_num_threads() == 1
        assert forward.thread_policy() == {"num_threads": 1, "thread_policy": "set_num_threads"}
        with pytest.raises(InvalidDataError, match="positive integer"):
            forward.set_num_threads(0)
        forward.set_num_threads(None)
        monkeypatch.setenv(forward.ENV_THREADS, "1")
        assert forward.apply_thread_policy(force=True)["thread_policy"] == forward.ENV_THREADS
        monkeypatch.setenv(forward.ENV_THREADS, "lots")
        with pytest.raises(InvalidDataError, match="NEUROCNN_NUM_THREADS"):
            forward.apply_thread_policy(force=True)
        monkeypatch.setenv(forward.ENV_THREADS, "torch")
        assert "torch" in forward.apply_thread_policy(force=True)["thread_policy"]
    finally:
        monkeypatch.delenv(forward.ENV_THREADS, raising=False)
        torch.set_num_threads(before)


def test_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert forward._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert forward._cgroup_quota(tmp_path) is None


def test_check_index_one_exception():
    assert check_index("channel", np.int64(2), 3) == 2
    for bad in (3, -1, 1.0, True):
        with pytest.raises(IndexOutOfRangeError, match="valid channels are 0..2"):
            check_index("channel", bad, 3)
    assert issubclass(IndexOutOfRangeError, (UnknownNameError, InvalidDataError, IndexError))


def test_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, (3, 45)).astype(float)  # many ties (categorical model RDMs)
    b = rng.random((2, 45))
    got = rsa.compare_rdms(a, b, method="spearman").values
    want = [[scipy.stats.spearmanr(x, y).statistic for y in b] for x in a]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_cpu_chunks_are_cache_sized_and_channels_last():
    images = torch.randn(10, 3, 224, 224)
    vectors = torch.randn(10, 5)
    chunks = forward.cpu_chunks([images, vectors])
    assert [len(c[0]) for c in chunks] == [4, 4, 2]  # four 224 px images per chunk
    assert all(c[0].is_contiguous(memory_format=torch.channels_last) for c in chunks)
    torch.testing.assert_close(torch.cat([c[1] for c in chunks]), vectors, rtol=0, atol=0)
    maps = forward.cpu_chunks([torch.randn(20, 24, 56, 56)])
    assert [len(c[0]) for c in maps] == [8, 8, 4]  # CPU_CHUNK_POSITIONS = eight 56 x 56 maps
    small = forward.cpu_chunks([torch.randn(300, 3, 8, 8)])
    assert len(small) == 1 and len(small[0][0]) == 300
    assert forward.cpu_chunks([vectors])[0][0] is vectors  # nothing spatial: unchanged


def test_chunked_passes_equal_one_contiguous_pass():
    """A subject's layer outputs and model output equal a plain pass of the whole batch."""
    subject = nc.VirtualSubject("efficientnet_lite0")
    x = torch.randn(9, 3, 224, 224)
    with torch.inference_mode():
        got = subject.forward_layers(x, ["stage2", "stage5"])
        out = subject.forward_output(x)
        captured = {}
        hooks = [subject.module(n).register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o.clone()))
                 for n in ("stage2", "stage5")]
        try:
            want = subject.model(x)
        finally:
            for h in hooks:
                h.remove()
    for name in ("stage2", "stage5"):
        assert got[name].is_contiguous()
        scale = captured[name].abs().max().item()  # float32 noise of a different summation order
        torch.testing.assert_close(got[name], captured[name], rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5 * want.abs().max().item())


def test_chunked_tail_never_changes_the_cached_frontier():
    """The tail of a split may run in-place ops (ReLU(inplace=True)); the frontier stays intact."""

    class Inplace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.relu(self.conv1(x)))

    net = Inplace().eval()
    head, tail = forward.split_graph(net, "relu", None)
    x = torch.randn(6, 3, 16, 16)
    with torch.inference_mode():
        frontier = forward._split_outputs(head, x)
        before = [t.clone() for t in frontier]
        got = forward._chunked(tail, frontier)
        want = net(x)
    for a, b in zip(frontier, before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_training_mode_and_gradient_passes_are_not_chunked():
    """BatchNorm in training mode normalizes over the batch: such passes must see the whole batch."""
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2)).train()
    subject = nc.VirtualSubject(net, preprocessing=IDENTITY, name="bn")
    subject.model.train()
    x = torch.randn(80, 3, 32, 32)  # 80 x 32 x 32 positions: 4 CPU chunks in eval mode
    assert len(forward.cpu_chunks([x])) > 1
    assert len(subject._forward._chunks(x, grad=False)) == 1
    subject.model.eval()
    assert len(subject._forward._chunks(x, grad=True)) == 1
    assert len(subject._forward._chunks(x, grad=False)) > 1


def test_cached_outputs_run_full_passes_when_the_frontier_outgrows_the_images():
    """A lesion in a layer whose input is larger than the images (3 -> 16 channels) is evaluated by full
    passes (caching that input saves no arithmetic); a later lesion splits; both equal a hooked full pass."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 3, stride=4), nn.ReLU(),
                        nn.Conv2d(2, 2, 1)).eval()
    subject = nc.VirtualSubject(net, preprocessing=IDENTITY, name="wide_first")
    images = torch.rand(6, 3, 16, 16)
    engine = forward.CachedOutputs(subject, images, None, 4, False)
    for layer in ("1", "3"):
        with lesions.knockout(subject, layer, [0]):
            got = engine.outputs(subject)
            with torch.inference_mode():
                want = forward.pool_features(subject.forward_output(images))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert engine._full_from == {"1"} and set(engine._frontiers) == {"3"}
