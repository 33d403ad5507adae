"""Meta-learning speed: step time, images/s, FLOPs and peak memory per preset.

    python benchmarks/train.py                       # CPU: tiny and small (paper: 1 step)
    python benchmarks/train.py --device cuda --presets small paper --batch 8 16 --amp both
    python benchmarks/train.py --presets small --no-face --set model.warp_guidance=true model.image_size=256

Times the real training step (``talkinghead.train.meta.meta_step``: E+G update and two D
updates) on random tensors of the right shapes, so data loading is excluded (the loader runs
in worker processes during training). Reports, per setting:

* step time and images/s (targets rendered per second; E sees K more per target),
* FLOPs of one generator forward (the inference cost per frame) and of one whole step,
* achieved TFLOP/s (and % of the GPU's dense bf16 peak, when known),
* peak memory (CUDA allocator peak, or the process's max RSS on CPU).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from talkinghead.config import get_preset
from talkinghead.models import build_models
from talkinghead.models.guide import WarpGuide
from talkinghead.train.meta import MetaNetworks, OptimizerPair, RenderFromEmbedding, meta_step
from talkinghead.losses import build_content_loss
from talkinghead.train.trainer import build_optimizers

#: Dense bf16 tensor-core peaks (TFLOP/s), for the utilisation column.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def gpu_peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def make_batch(cfg, batch: int, device) -> dict:
    from talkinghead.data.warp import TEMPLATE_68

    s, k = cfg.model.image_size, cfg.train.shots
    face = torch.tensor(TEMPLATE_68 * s, dtype=torch.float32, device=device)
    return {
        "landmarks": face + torch.randn(batch, k, 68, 2, device=device),  # for warp guidance
        "target_landmarks": face + torch.randn(batch, 68, 2, device=device),
        "frames": torch.randn(batch, k, 3, s, s, device=device).clamp_(-1, 1),
        "sketches": torch.randn(batch, k, 3, s, s, device=device).clamp_(-1, 1),
        "target": torch.randn(batch, 3, s, s, device=device).clamp_(-1, 1),
        "target_sketch": torch.randn(batch, 3, s, s, device=device).clamp_(-1, 1),
        "video_index": torch.arange(batch, device=device) % 16,
    }


def bench(preset: str, batch: int, device: torch.device, amp: bool, steps: int, face: bool,
          compile_: bool, overrides: list[str] = ()) -> dict:
    cfg = get_preset(preset).override([f"train.amp={amp}", f"train.batch_size={batch}"]
                                      + ([] if face else ["loss.face=0"]) + list(overrides))
    torch.manual_seed(0)
    E, G, D = (m.to(device) for m in build_models(cfg.model, num_videos=16))
    render, d_step, raw_d = RenderFromEmbedding(G), D, D
    if compile_:
        E, render, d_step, raw_d = (torch.compile(m) for m in (E, render, D, D))
    opts = build_optimizers(E, G, D, cfg, device)
    content = build_content_loss(cfg.loss, device)
    nets = MetaNetworks(E, render, d_step, raw_d, opts["g"], OptimizerPair(opts["d"], opts["w"]), content,
                        WarpGuide.for_generator(G, cfg))
    data = make_batch(cfg, batch, device)
    # the paper preset's D steps after the first score fresh episodes (same shapes, same cost)
    extra = (data,) * (cfg.train.disc_steps - 1) if cfg.train.disc_fresh_batches else ()

    def step():
        meta_step(data, nets, cfg, device, disc_batches=extra)

    # FLOPs: one G forward (batch 1) and one full step.
    s = cfg.model.image_size
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        guide = torch.zeros(1, 4, s, s, device=device) if cfg.model.warp_guidance else None
        G(torch.zeros(1, 3, s, s, device=device), torch.zeros(G.psi_size, device=device), guide)
    g_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        step()
    step_flops = fc.get_total_flops()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2 if device.type == "cuda" else 1):  # warm-up (and compile)
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    mem = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"preset": f"{preset} {s}px" + (" warp-guided" if cfg.model.warp_guidance else ""), "batch": batch, "K": cfg.train.shots, "amp": amp and device.type == "cuda",
            "face": cfg.loss.face > 0, "step_s": dt, "images_s": batch / dt, "g_gflops": g_flops / 1e9,
            "step_gflops": step_flops / 1e9, "tflops": step_flops / dt / 1e12, "mem_gib": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--batch", nargs="+", type=int, default=None)
    ap.add_argument("--amp", choices=["on", "off", "both"], default="both")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--no-face", action="store_true", help="without the face-network content term")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                    help="config overrides, e.g. model.warp_guidance=true model.image_size=256")
    args = ap.parse_args()
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    presets = args.presets or (["tiny", "small"] if cpu else ["small", "paper"])
    amps = [False] if cpu else {"on": [True], "off": [False], "both": [False, True]}[args.amp]
    peak = gpu_peak()
    name = torch.cuda.get_device_name() if not cpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"# meta-learning step benchmark on {name} (torch {torch.__version__})\n")
    print("| preset | batch | K | AMP | face term | step (s) | images/s | G fwd GFLOP | step GFLOP | TFLOP/s "
          + ("| % peak " if peak else "") + "| peak mem (GiB) |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|" + ("---:|" if peak else "") + "---:|")
    for preset in presets:
        batches = args.batch or [get_preset(preset).train.batch_size]
        for batch in batches:
            for amp in amps:
                steps = args.steps or (2 if cpu else 10)
                r = bench(preset, batch, device, amp, steps, not args.no_face, args.compile, args.set)
                util = f"| {100 * r['tflops'] / peak:.1f} " if peak else ""
                print(f"| {r['preset']} | {r['batch']} | {r['K']} | {'bf16' if r['amp'] else 'fp32'} | "
                      f"{'on' if r['face'] else 'off'} | {r['step_s']:.3f} | {r['images_s']:.1f} | "
                      f"{r['g_gflops']:.2f} | {r['step_gflops']:.0f} | {r['tflops']:.3f} {util}| {r['mem_gib']:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
