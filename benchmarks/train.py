"""Training throughput: the tiny model under Ray Train (1 worker) vs the same loop in bare PyTorch.

    python benchmarks/train.py --data runs/demo/dataset [--steps 40]      # CPU, tiny preset
    python benchmarks/train.py --device cuda [--steps 20] [--peak-tflops 989]  # sd15-sized, random weights

CPU mode prints samples/s of (a) ``training.run.run`` (TorchTrainer, 1 worker, gloo) read from
the MLflow ``samples_per_s`` history after the first window, and (b) the same model, loss
(``training.objective.diffusion_loss``), optimizer and batches in a plain loop in this process.
GPU mode builds the sd15-sized network with random weights (no download), trains the paper's
trainable groups in bf16 on random 16x32x32 latents, and reports samples/s and MFU (model FLOPs
of one forward+backward counted with ``torch.utils.flop_counter`` / peak bf16 FLOP/s).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.config import load
from model.config import TRAINABLE_GROUPS
from training.config import PRESETS, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(cfg: TrainConfig, steps: int, warmup: int) -> float:
    """samples/s of the plain-PyTorch loop on the same data (in memory), model and objective."""
    import pyarrow.parquet as pq
    from diffusers import DDPMScheduler

    from model.build import build_livephoto
    from model.encoders import encode_prompts
    from pipelines.dataset import read_dataset_info, tensor_values
    from pipelines.dataset import collate
    from training.objective import diffusion_loss, step_generator

    info = read_dataset_info(cfg.data.dir)
    parquet = pq.read_table(Path(cfg.data.dir) / "clips")
    columns = {name: parquet.column(name).to_numpy(zero_copy_only=False) for name in ("intensity_level", "caption")}
    columns.update({name: tensor_values(parquet.column(name), spec) for name, spec in info["arrays"].items()})
    c = build_livephoto(cfg.model)
    model = c.model
    model.set_trainable(cfg.train.trainable)
    model.train()
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr)
    sched = DDPMScheduler.from_config(c.scheduler.config)
    empty_prompt = encode_prompts(c.tokenizer, c.text_encoder, [""])
    empty, empty_mask = empty_prompt["embeddings"].float(), empty_prompt["attention_mask"]
    bs = cfg.train.batch_size
    rng = np.random.default_rng(0)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        chosen = rng.choice(parquet.num_rows, bs, replace=False)
        batch = collate({k: v[chosen] for k, v in columns.items()})
        loss = diffusion_loss(model, batch, sched, step_generator(0, step, 0, 0), empty_embedding=empty,
                              empty_mask=empty_mask, caption_dropout=0.5)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * bs / (time.perf_counter() - start)


def ray_train(cfg: TrainConfig, warmup_windows: int = 1) -> float:
    """samples/s reported by the Ray Train run, first window(s) (start-up, first epoch) left out."""
    import ray
    from mlflow.tracking import MlflowClient

    from training.run import run

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = run(cfg)
    finally:
        ray.shutdown()
    history = MlflowClient(tracking_uri=summary["tracking_uri"]).get_metric_history(summary["run_id"], "samples_per_s")
    values = [m.value for m in sorted(history, key=lambda m: m.step)][warmup_windows:]
    return float(np.mean(values))


def gpu_mode(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine (the GPU numbers need a GPU)")
    from diffusers import DDPMScheduler
    from torch.utils.flop_counter import FlopCounterMode

    from model.build import build_sd15_architecture
    from model.config import ModelConfig
    from training.objective import diffusion_loss, step_generator

    c = build_sd15_architecture(ModelConfig(resolution=256, num_frames=16))
    model = c.model.cuda().train()
    model.set_trainable(TRAINABLE_GROUPS)
    model.enable_gradient_checkpointing() if args.checkpointing else None
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler.from_config(c.scheduler.config)
    b = args.batch_size
    batch = {
        "latents": torch.randn(b, 4, 16, 32, 32, device="cuda"),
        "text_embedding": torch.randn(b, 77, 768, device="cuda"),
        "attention_mask": torch.ones(b, 77, dtype=torch.long, device="cuda"),
        "image_tokens": torch.randn(b, 256, 1024, device="cuda"),
        "intensity": torch.randint(1, 11, (b,), device="cuda"),
    }
    empty = torch.zeros(1, 77, 768, device="cuda")
    empty_mask = torch.ones(1, 77, dtype=torch.long, device="cuda")

    def one_step(i: int) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = diffusion_loss(model, batch, sched, step_generator(0, i, 0, 0), empty_embedding=empty,
                                  empty_mask=empty_mask, caption_dropout=0.5)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        one_step(0)
    flops = counter.get_total_flops()
    for i in range(3):
        one_step(i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        one_step(i)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    print(f"device={torch.cuda.get_device_name()}  sd15-sized LivePhoto, 16x256x256, batch {b}, bf16, checkpointing={args.checkpointing}")
    print(f"{'s/step':>8} {'samples/s':>10} {'TFLOP/step':>11} {'TFLOP/s':>8} {'MFU':>6}")
    achieved = flops / seconds / 1e12
    print(f"{seconds:8.3f} {b / seconds:10.2f} {flops / 1e12:11.2f} {achieved:8.1f} {achieved / args.peak_tflops:6.1%}  (target MFU >= 40%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", default="runs/demo/dataset", help="preprocessed tiny dataset (CPU mode)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=5, help="train.log_every of the Ray run (the suite's tests log every step)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (GPU mode)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of the GPU (H100 SXM: 989)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        gpu_mode(args)
        return 0
    data = (ROOT / args.data) if not Path(args.data).is_absolute() else Path(args.data)
    torch.set_num_threads(1)  # the Ray worker gets 1 CPU; give the bare loop the same
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load(TrainConfig, presets=PRESETS, preset="tiny", overrides={
            "data.dir": str(data), "output.dir": tmp, "train.steps": args.steps, "train.batch_size": args.batch_size,
            "train.log_every": args.log_every, "samples.every": 0, "train.val_every": 0, "checkpoint.every": args.steps,
        })
        bare = bare_loop(cfg, args.steps, warmup=3)
        ray_rate = ray_train(cfg)
    print(f"\ntiny preset, batch {args.batch_size}, {args.steps} steps, log every {args.log_every}, 1 worker / 1 thread, "
          f"machine={platform.machine()}")
    print(f"{'loop':40} {'samples/s':>10}")
    print(f"{'bare PyTorch (same model, loss, batches)':40} {bare:10.2f}")
    print(f"{'Ray Train TorchTrainer, 1 worker':40} {ray_rate:10.2f}")
    print(f"\nRay Train / bare: {ray_rate / bare:.2f}  (target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
