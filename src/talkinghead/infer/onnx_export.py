"""ONNX export of an avatar's renderer (:meth:`Avatar.renderer`: G with ψ folded in), so that
any ONNX runtime can render the avatar:

    images (B, 3, O, O) = model(sketches (B, 3, S, S) in [-1, 1], landmarks (B, 68, 2) crop pixels)

O is the output size chosen at export (``size``; default the avatar's own output size): above
the network's size S the output-resolution detail layer (:mod:`talkinghead.infer.detail`: the
shots warped at O, added where G trusts its guide) is part of the graph.

Both inputs are always in the graph. The paper's G reads only the sketch; the exporter drops
inputs a graph does not use, so ``landmarks`` is then declared again (unused) to keep one
interface for every avatar (a warp-guided G uses it). Needs ``pip install "talkinghead[app]"``
(onnx, onnxruntime).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path

INPUTS = ("sketches", "landmarks", "shot_bias")  # shot_bias: (B, K) added to the shots' distances
OUTPUT = "images"
INSTALL_HINT = 'ONNX export needs onnx and onnxruntime: pip install "talkinghead[app]"'


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise TalkingHeadError(INSTALL_HINT) from None
    return onnx, onnxruntime


def export_onnx(avatar, path: str | os.PathLike, opset: int = 17, size: int | None = None) -> Path:
    """Write ``avatar``'s renderer at output size ``size`` (default ``avatar.output_size``) as an
    ONNX model with a dynamic batch axis (atomically).
    A warp-guided avatar's warp goes into the graph too, in standard ONNX operators."""
    onnx, _ = _require_onnx()
    path = Path(path)
    out_size = avatar.check_size(size)
    module = avatar.sized_renderer(out_size).to("cpu").eval()
    size = avatar.size
    sketches = torch.zeros(2, 3, size, size)
    landmarks = torch.from_numpy(np.repeat(avatar.reference_landmarks[None], 2, axis=0).astype(np.float32))
    # with several shots the caller may cross-fade them over consecutive frames (AvatarRenderer.smoothing_bias)
    shot_bias = torch.zeros(2, avatar.shots)
    dynamic = {name: {0: "batch"} for name in (*INPUTS, OUTPUT)}
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript-based exporter: torch.export (dynamo=True) cannot trace this G yet.
        torch.onnx.export(module, (sketches, landmarks, shot_bias), str(tmp), input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        model = onnx.load(str(tmp))
        _declare_missing_inputs(onnx, model, size, avatar.shots)
        model.doc_string = (f"talkinghead avatar renderer: {OUTPUT} (B,3,{out_size},{out_size}) in [-1,1] from "
                            f"sketches (B,3,{size},{size}) in [-1,1], landmarks (B,68,2) crop pixels and "
                            f"shot_bias (B,{avatar.shots}) added to the shots' landmark distances (zeros: none)")
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return path


def _declare_missing_inputs(onnx, model, size: int, shots: int) -> None:
    """Re-declare inputs the exporter dropped because the graph does not read them."""
    present = {i.name for i in model.graph.input}
    shapes = {"sketches": ["batch", 3, size, size], "landmarks": ["batch", 68, 2], "shot_bias": ["batch", shots]}
    for name in INPUTS:
        if name not in present:
            model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shapes[name]))


def cpu_session(ort, model: str | bytes, threads: int | None = None):
    """An onnxruntime CPU session for a model file or serialised bytes (``ort``: the
    onnxruntime module), ``threads`` intra-op threads (None: onnxruntime's choice)."""
    options = ort.SessionOptions()
    # No busy-waiting between runs: spinning threads starve PyTorch (and the live
    # pipeline's other stages) on a machine with few cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxRenderer:
    """Renders with onnxruntime: ``(sketches, landmarks[, shot_bias]) numpy → images numpy``
    (models exported before ``shot_bias`` existed take the first two)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        _, ort = _require_onnx()
        try:
            self.session = cpu_session(ort, str(path), threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise TalkingHeadError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        # the shot_bias width K, fixed at export (None: a file exported before that input existed)
        self.bias_shots = next((i.shape[1] for i in self.session.get_inputs() if i.name == "shot_bias"), None)

    def __call__(self, sketches: np.ndarray, landmarks: np.ndarray, shot_bias: np.ndarray | None = None) -> np.ndarray:
        feeds = {"sketches": np.asarray(sketches, np.float32), "landmarks": np.asarray(landmarks, np.float32)}
        if self.bias_shots is not None:
            feeds["shot_bias"] = (np.zeros((len(feeds["sketches"]), self.bias_shots), np.float32)
                                  if shot_bias is None else np.asarray(shot_bias, np.float32))
        return self.session.run([OUTPUT], {k: v for k, v in feeds.items() if k in self.inputs})[0]


def _test_inputs(avatar, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sketches (count, 3, S, S) of the avatar's own landmarks with random head motion."""
    from talkinghead.data.sketch import landmarks_to_sketch, sketch_to_tensor

    rng = np.random.default_rng(seed)
    base = avatar.reference_landmarks
    centre = base.mean(0)
    marks = []
    for _ in range(count):
        angle = np.deg2rad(rng.uniform(-10, 10))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        marks.append((base - centre) @ rot.T * rng.uniform(0.9, 1.1) + centre + rng.uniform(-4, 4, 2))
    marks = np.stack(marks).astype(np.float32)
    sketches = torch.stack([sketch_to_tensor(landmarks_to_sketch(m, avatar.size)) for m in marks])
    return sketches, torch.from_numpy(marks)


def verify_onnx(avatar, path: str | os.PathLike, frames: int = 16, seed: int = 0, threads: int = 1,
                size: int | None = None) -> dict:
    """Compare the ONNX model (exported at output size ``size``, default the avatar's) with
    PyTorch on ``frames`` sketches of the avatar's face.

    Returns max_abs_diff (on [-1, 1] images) and frames/s of both at batch 1, with the same
    number of threads, timed in alternating rounds so that a change in the machine's load
    affects both alike (median time per frame). One thread each by default: on a shared
    2-core machine PyTorch's two OpenMP threads can run 40× slower than one (each waits for a
    descheduled peer), which would measure the machine's load, not the runtimes.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _compare(avatar, path, frames, seed, threads, size)
    finally:
        torch.set_num_threads(previous)


def _compare(avatar, path, frames: int, seed: int, threads: int, size: int | None) -> dict:
    runtime = OnnxRenderer(path, threads=threads)
    module = avatar.sized_renderer(size).to("cpu").eval()
    sketches, landmarks = _test_inputs(avatar, frames, seed)
    with torch.inference_mode():
        reference = module(sketches, landmarks).numpy()
    result = runtime(sketches.numpy(), landmarks.numpy())
    diff = float(np.abs(result - reference).max())

    def run_torch(i):
        with torch.inference_mode():
            module(sketches[i:i + 1], landmarks[i:i + 1])

    def run_onnx(i):
        runtime(sketches[i:i + 1].numpy(), landmarks[i:i + 1].numpy())

    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    run_torch(0), run_onnx(0)  # warm-up
    for i in range(frames):
        for name, fn in (("torch", run_torch), ("onnx", run_onnx)):
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
    return {"max_abs_diff": diff, "frames": frames, "threads": threads,
            "torch_fps": 1 / float(np.median(times["torch"])),
            "onnxruntime_fps": 1 / float(np.median(times["onnx"]))}


def run_onnx_export(args) -> int:
    """`talkinghead export --onnx AVATAR -o avatar.onnx`."""
    from talkinghead.infer.avatar import Avatar

    if not str(args.output).lower().endswith(".onnx"):
        raise TalkingHeadError(f"{args.output}: output must be an .onnx file")
    if args.set or args.fp32:
        raise TalkingHeadError("--set and --fp32 apply to checkpoint export, not to --onnx (which is fp32)")
    _require_onnx()
    source = Path(args.checkpoint)
    if not source.is_file():
        raise TalkingHeadError(f"{source}: avatar file not found")
    avatar = Avatar.load(source, checkpoint=getattr(args, "meta_checkpoint", None), device="cpu")
    size = avatar.check_size(getattr(args, "size", None))
    path = export_onnx(avatar, args.output, size=size)
    check = verify_onnx(avatar, path, size=size)
    status = "ok" if check["max_abs_diff"] <= 1e-3 else "MISMATCH"
    print(f"{path}: {size}px renderer ({avatar.size}px network), {path.stat().st_size / 2**20:.1f} MB; onnxruntime vs PyTorch on "
          f"{check['frames']} frames: max |diff| {check['max_abs_diff']:.2e} ({status}); "
          f"{check['onnxruntime_fps']:.1f} vs {check['torch_fps']:.1f} frames/s "
          f"(batch 1, {check['threads']} CPU thread(s) each)")
    return 0 if status == "ok" else 1
