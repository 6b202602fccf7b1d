"""Cascade.predict_images: raw frames of any size in, the same CascadeOutput out; members at
different resolutions each prepare their input from the same frames, only for the rows that
reach them; bundles without a resize behave as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.bundle_factory import make_mlp_onnx
from wcx import Cascade
from wcx.bundle import Bundle, write_bundle
from wcx.core.frames import frames_of
from wcx.core.manifest import CenterCrop, InputSection, MemberSection, Resize
from wcx.core.preprocess import Preprocessor
from wcx.errors import BadInputError

WINDOW = {"kind": "window", "task": "selective", "score": "msp", "windows": [[0.3, 0.9]], "tau": 0.6}


def frames_bundle(root: Path, sizes: tuple[int, ...] = (8, 12), channels: int = 1) -> Bundle:
    """Members at (channels, s, s) for s in ``sizes``: shorter side to s + 3, center crop s."""
    specs = []
    for i, s in enumerate(sizes):
        onnx_path = make_mlp_onnx(root / f"m{i}.onnx", sample_shape=(channels, s, s), seed=i)
        section = InputSection(name="input", shape=(channels, s, s), mean=(0.5,) * channels, std=(0.25,) * channels,
                               resize=Resize(shorter_side=s + 3), crop=CenterCrop((s, s)))
        specs.append((MemberSection(name=f"m{i}", file=f"members/m{i}.onnx", sha256="0" * 64, precision="fp32",
                                    input=section, output_name="logits", num_classes=4, macs=100 * (i + 1)),
                      onnx_path))
    return write_bundle(root / "bundle", specs, {"wcx": "test"})


def odd_frames(n: int = 9, channels: int = 1, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(17, 23), (40, 31), (9, 9), (12, 50), (31, 17)]
    return [rng.integers(0, 256, shapes[i % len(shapes)] + ((channels,) if channels > 1 else ()), dtype=np.uint8)
            for i in range(n)]


def member_probs(bundle: Bundle, index: int, frames: list[np.ndarray]) -> np.ndarray:
    """Softmax of member ``index`` on its own preparation of ``frames``, computed directly."""
    member = bundle.members[index]
    x = Preprocessor(member.input).frames(frames)
    session = ort.InferenceSession(str(bundle.member_path(index)), providers=["CPUExecutionProvider"])
    (z,) = session.run(["logits"], {"input": x})
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_two_resolutions_run_from_the_same_frames(tmp_path: Path) -> None:
    bundle = frames_bundle(tmp_path)
    frames = odd_frames()
    with Cascade.load(bundle, "onnxruntime", policy="all") as c:
        out = c.predict_images(frames, return_probs=True)
    expected = (member_probs(bundle, 0, frames) + member_probs(bundle, 1, frames)) / 2
    np.testing.assert_allclose(out.probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.pred, expected.argmax(1))
    assert out.exit_stage.tolist() == [2] * len(frames)


def test_later_members_prepare_only_the_rows_that_reach_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wcx.runtime.executor as executor

    bundle = frames_bundle(tmp_path)
    bundle.update_sections(policy=WINDOW)
    prepared: list[int] = []
    original = executor.frames_to_input
    monkeypatch.setattr(executor, "frames_to_input", lambda s, f, **kw: prepared.append(len(f)) or original(s, f, **kw))
    frames = odd_frames(40, seed=1)
    with Cascade.load(bundle, "onnxruntime") as c:
        out = c.predict_images(frames)
    reached = int(np.count_nonzero(out.exit_stage == 2))
    assert 0 < reached < len(frames)
    assert prepared == [len(frames), reached]
    first = member_probs(bundle, 0, frames)
    stayed = out.exit_stage == 1
    np.testing.assert_allclose(out.score[stayed], first.max(1)[stayed], rtol=1e-5)
    assert np.all((first.max(1)[~stayed] >= 0.3) & (first.max(1)[~stayed] <= 0.9))
    np.testing.assert_array_equal(out.accept, out.score >= 0.6)


def test_frames_in_batches_and_from_a_generator_give_one_output(tmp_path: Path) -> None:
    bundle = frames_bundle(tmp_path, channels=3)
    frames = odd_frames(11, channels=3, seed=2)
    with Cascade.load(bundle, "onnxruntime", policy="all") as c:
        whole = c.predict_images(frames)
        pieces = c.predict_images((f for f in frames), batch_size=4)
        bgr = c.predict_images([f[:, :, ::-1] for f in frames], channel_order="BGR")
        grey = c.predict_images([f[:, :, 0] for f in frames])  # grey frames into RGB members
    for other in (pieces, bgr):
        np.testing.assert_array_equal(other.pred, whole.pred)
        np.testing.assert_array_equal(other.score, whole.score)
    assert len(grey) == 11


def test_a_uint8_batch_is_a_batch_of_frames(tmp_path: Path) -> None:
    bundle = frames_bundle(tmp_path)
    x = np.random.default_rng(3).integers(0, 256, (5, 1, 21, 14), dtype=np.uint8)
    with Cascade.load(bundle, "onnxruntime", policy="all") as c:
        a = c(x, return_probs=True)
        b = c.predict_images(list(frames_of(x)), return_probs=True)
        np.testing.assert_array_equal(a.probs, b.probs)
        with pytest.raises(BadInputError, match="resize raw frames, which are uint8"):
            c(x.astype(np.float32) / 255)


def test_bundles_without_resize_take_frames_of_their_size(policy_bundle: Bundle) -> None:
    x = np.random.default_rng(4).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    with Cascade.load(policy_bundle, "onnxruntime") as c:
        assert not c.takes_frames
        a = c(x)
        b = c.predict_images([f[:, :, 0] for f in frames_of(x)])
        np.testing.assert_array_equal(a.pred, b.pred)
        np.testing.assert_array_equal(a.score, b.score)
        with pytest.raises(BadInputError, match="frame 1: a frame of 9x8 pixels, but the member takes 8x8"):
            c.predict_images([np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8)])
        with pytest.raises(BadInputError, match="no frames"):
            c.predict_images([])


def mlp_144():  # type: ignore[no-untyped-def]
    """The torch twin of a 12 x 12 member (the torch backend's test below)."""
    from tests.runtime.torch_members import MLP

    return MLP(features=144)


def test_the_torch_backend_prepares_frames_as_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    import json

    import onnx
    import torch
    from onnx import numpy_helper
    from safetensors.torch import save_file

    from wcx.bundle import MANIFEST_NAME, sha256_file

    bundle = frames_bundle(tmp_path)
    bundle.update_sections(policy=WINDOW)
    manifest = json.loads((bundle.path / MANIFEST_NAME).read_text())
    for i, ref in enumerate(["tests.runtime.torch_members:mlp_member", "tests.runtime.test_predict_images:mlp_144"]):
        w = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(bundle.member_path(i))).graph.initializer}
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, order="C"))  # a writable, C-ordered copy

        state = {"fc1.weight": tensor(w["w1"].T), "fc1.bias": tensor(w["b1"]),
                 "fc2.weight": tensor(w["w2"].T), "fc2.bias": tensor(w["b2"])}
        save_file(state, str(bundle.path / f"members/m{i}.safetensors"))
        manifest["members"][i]["torch_source"] = {"callable": ref, "file": f"members/m{i}.safetensors",
                                                  "sha256": sha256_file(bundle.path / f"members/m{i}.safetensors")}
    (bundle.path / MANIFEST_NAME).write_text(json.dumps(manifest))
    frames = odd_frames(30, seed=5)
    with Cascade.load(bundle.path, "onnxruntime") as c:
        expected = c.predict_images(frames, return_probs=True)
    with Cascade.load(bundle.path, "torch", device="cpu") as c:
        got = c.predict_images(frames, return_probs=True)
    np.testing.assert_array_equal(got.exit_stage, expected.exit_stage)
    np.testing.assert_allclose(got.probs, expected.probs, rtol=1e-4, atol=1e-5)


def test_bench_times_members_at_their_own_resolutions(tmp_path: Path) -> None:
    """``benchmark`` on a bundle whose members resize: raw frames of one size in, every member
    timed alone on its own preparation, the cascade's pass fraction counted as it ran."""
    from wcx.runtime.bench import benchmark

    bundle = frames_bundle(tmp_path)
    bundle.update_sections(policy=WINDOW)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 1, 30, 21), dtype=np.uint8)  # frames of one size, larger than any member's
    with Cascade.load(bundle, "onnxruntime") as c:
        reference = c(x)
        rows = benchmark(c, x, [1, 4], warmup=0, repeats=1, rows=40)
    by = {(r.config, r.batch_size): r for r in rows}
    assert {"cascade", "ensemble", "member:m0", "member:m1"} <= {r.config for r in rows}
    for b in (1, 4):
        cascade_row = by[("cascade", b)].to_dict()
        reached = cascade_row["stage_rows"]
        assert reached[0] == 40  # every row timed once, all through stage 1
        assert reached[1] == int(np.count_nonzero(reference.exit_stage >= 2))
