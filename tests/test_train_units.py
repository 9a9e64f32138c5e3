"""Training building blocks without Ray: the loss, checkpoints, new-stage weights, the data split."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.dataset
import pyarrow.parquet as pq
import pytest
import torch
from ray.data.extensions import ArrowTensorArray

from common.config import load
from model.build import build_livephoto
from training.config import PRESETS, TrainConfig
from pipelines.dataset import OpenedDataset, collate, is_val
from training.checkpoint import EMA, CheckpointMismatchError, TrainState, load_checkpoint, load_weights, save_checkpoint
from training.loop import WorkerArgs
from training.objective import diffusion_loss, step_generator


@pytest.fixture(scope="module")
def setup():
    cfg = load(TrainConfig, presets=PRESETS, preset="tiny", overrides={"data.dir": "d", "output.dir": "o"})
    components = build_livephoto(cfg.model)
    return cfg, components


def _batch(cfg, b=2):
    g = torch.Generator().manual_seed(0)
    f, r = cfg.model.num_frames, cfg.model.resolution // 4
    return {
        "latents": torch.randn((b, 4, f, r, r), generator=g),
        "text_embedding": torch.randn((b, 77, 32), generator=g),
        "attention_mask": torch.ones((b, 77), dtype=torch.long),
        "image_tokens": torch.randn((b, 16, 32), generator=g),
        "intensity": torch.tensor([1, 10]),
    }


def test_loss_is_a_function_of_the_step_seed(setup):
    cfg, c = setup
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(c.scheduler.config)
    empty = torch.zeros(1, 77, 32)
    kwargs = dict(empty_embedding=empty, empty_mask=torch.ones(1, 77, dtype=torch.long), caption_dropout=0.5, min_snr_gamma=5.0)
    a = diffusion_loss(c.model, _batch(cfg), sched, step_generator(0, 3, 0, 0), **kwargs)
    b = diffusion_loss(c.model, _batch(cfg), sched, step_generator(0, 3, 0, 0), **kwargs)
    other = diffusion_loss(c.model, _batch(cfg), sched, step_generator(0, 4, 0, 0), **kwargs)
    assert torch.isfinite(a) and a.item() == b.item() and a.item() != other.item()


def test_checkpoint_round_trip_and_new_stage_weights(setup, tmp_path):
    cfg, c = setup
    model = c.model
    model.set_trainable(cfg.train.trainable)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in named], lr=1e-3)
    from diffusers.optimization import get_scheduler

    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
    loss = sum(p.float().pow(2).mean() for _, p in named)
    loss.backward()
    opt.step()
    sched.step()
    save_checkpoint(tmp_path, model, opt, sched, EMA(named, 0.9), TrainState(step=5, epoch=1, batch_in_epoch=2), cfg, {"mlflow_run_id": "r"})

    fresh = build_livephoto(dataclasses.replace(cfg.model, seed=1)).model
    fresh.set_trainable(cfg.train.trainable)
    named2 = [(n, p) for n, p in fresh.named_parameters() if p.requires_grad]
    opt2 = torch.optim.AdamW([p for _, p in named2], lr=1e-3)
    sched2 = get_scheduler("cosine", opt2, num_warmup_steps=2, num_training_steps=10)
    state = load_checkpoint(tmp_path, fresh, opt2, sched2, EMA(named2, 0.9), cfg)
    assert (state.step, state.epoch, state.batch_in_epoch) == (5, 1, 2)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert all(torch.equal(a, b) for a, b in zip(model.trainable_state_dict().values(), fresh.trainable_state_dict().values()))

    third = build_livephoto(dataclasses.replace(cfg.model, seed=2)).model
    third.set_trainable(cfg.train.trainable)
    load_weights(tmp_path, third, None, cfg)  # a new stage: weights only
    assert torch.equal(third.state_dict()["unet.conv_in.weight"], model.state_dict()["unet.conv_in.weight"])
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, reweight_layers=2))
    with pytest.raises(CheckpointMismatchError, match=r"model.reweight_layers \(checkpoint 3, now 2\)"):
        load_weights(tmp_path, third, None, other)


def test_val_split_is_by_videoid_and_stable():
    ids = [str(i) for i in range(2000)]
    held = [v for v in ids if is_val(v, 0.1)]
    assert 150 < len(held) < 250 and held == [v for v in ids if is_val(v, 0.1)]
    assert not any(is_val(v, 0.0) for v in ids)


def test_collate_turns_the_tensor_columns_into_tensors():
    lat = np.arange(8 * 4 * 2 * 2, dtype=np.float16).reshape(8, 4, 2, 2)
    batch = {"latents": lat[None], "attention_mask": np.ones((1, 77), np.uint8),  # as Ray Data gives tensor columns
             "intensity_level": np.array([7]), "caption": np.array(["a cat"], dtype=object)}
    out = collate(batch)
    assert out["latents"].shape == (1, 4, 8, 2, 2)  # (batch, channels, frames, h, w)
    assert torch.equal(out["latents"][0, :, 3], torch.from_numpy(lat[3].astype(np.float32)))
    assert out["intensity"].tolist() == [7] and out["caption"] == ["a cat"] and out["attention_mask"].dtype == torch.long


def test_sample_references_come_from_latents_when_no_frames_are_stored(tmp_path):
    """The sd15 preprocessing preset stores latents, not frames: the sample videos still get their
    reference images, decoded from the clips' first-frame latents by the model's own autoencoder."""
    from model import encoders as E
    from model.config import ModelConfig, model_preset
    from training.run import sample_references
    from training.tracking import WorkerTracker

    cfg = load(TrainConfig, presets=PRESETS, preset="mini", overrides={"data.dir": "d", "output.dir": "o"})
    mini = ModelConfig(**model_preset("mini"))
    vae = E.load_vae(mini)  # the pixel autoencoder: decode(encode(x)) is x
    g = np.random.default_rng(0)
    clips = [g.integers(0, 256, (mini.num_frames, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    latents = [E.encode_latents(vae, E.frames_to_pixels(c)).half().numpy() for c in clips]
    spec = {"dtype": "float16", "shape": list(latents[0].shape)}

    # three clips in two Parquet files; the last one is held out (its id hashes lowest), so it
    # comes first, then the training clips in file order
    ids = ["a", "b", "c"]
    crc = {v: zlib.crc32(v.encode()) % 10_000 for v in ids}
    while min(crc, key=crc.get) != ids[-1]:
        ids[-1] += "x"
        crc = {v: zlib.crc32(v.encode()) % 10_000 for v in ids}
    fraction = (crc[ids[-1]] + 1) / 10_000
    assert [is_val(v, fraction) for v in ids] == [False, False, True]
    (tmp_path / "clips").mkdir()
    for name, rows in (("part0", [0, 1]), ("part1", [2])):
        stacked = ArrowTensorArray.from_numpy(np.stack([latents[k] for k in rows]))  # a tensor column, as preprocessing writes
        table = pa.table({"videoid": [ids[k] for k in rows], "latents": stacked})
        pq.write_table(table, tmp_path / "clips" / f"{name}.parquet")
    data = OpenedDataset(train=None, val="held-out rows", info={"arrays": {"latents": spec}}, num_train=2, num_val=1,
                         files=pyarrow.dataset.dataset(tmp_path / "clips", format="parquet"), val_fraction=fraction)

    refs = sample_references(data, 2)
    assert list(refs) == ["latents"] and refs["latents"].shape == (2, *latents[0].shape[1:])
    assert sample_references(data, 0) == {}
    components = type("C", (), {"vae": vae})()
    tracker = WorkerTracker(WorkerArgs(cfg, "x", f"sqlite:///{tmp_path}/m.db", str(tmp_path), sample_references=refs), components)
    assert [r.shape for r in tracker.refs] == [(32, 32, 3)] * 2
    for ref, clip in zip(tracker.refs, [clips[2], clips[0]]):  # first frames, through fp16 latents
        assert np.abs(ref.astype(int) - clip[0].astype(int)).max() <= 1


def test_a_checkpoint_from_another_tracking_store_starts_a_new_run_that_names_it(setup, tmp_path):
    """``resume`` pointing at another output folder's checkpoint: its MLflow run is not in this
    folder's store, so a new run starts, tagged with the run the checkpoint came from; a run the
    store holds is continued."""
    from mlflow.tracking import MlflowClient

    from training.tracking import start_run

    cfg, _ = setup
    uri, first = start_run(cfg, str(tmp_path))
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    _, fresh = start_run(cfg, str(tmp_path), run_id="0123456789abcdef0123456789abcdef")
    client = MlflowClient(tracking_uri=uri)
    assert fresh != first and client.get_run(fresh).data.tags["resumed_from_run"] == "0123456789abcdef0123456789abcdef"
    assert start_run(cfg, str(tmp_path), run_id=first) == (uri, first)
    assert client.get_run(first).data.tags["resumed"] == "true"
