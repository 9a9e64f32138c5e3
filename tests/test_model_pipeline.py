"""LivePhotoPipeline on the tiny preset (CPU): determinism, batching, prior inversion, input checks, video files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.media import center_crop_resize, to_rgb
from model.pipeline import LivePhotoPipeline
from model.media import encode_video, export_video, read_video

CALL = dict(num_frames=4, height=64, width=64, num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe() -> LivePhotoPipeline:
    p = LivePhotoPipeline.from_pretrained("tiny")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A non-square uint8 photo with structure (gradient + blocks)."""
    y, x = np.mgrid[0:72, 0:96]
    img = np.stack([x * 2, y * 3, (x + y) % 255], axis=-1).astype(np.uint8)
    img[20:40, 30:60] = (250, 40, 40)
    return img


def test_output_shapes_and_types(pipe, photo):
    out = pipe(photo, "the bear is dancing", intensity=3, seed=0, **CALL)
    assert out.frames.shape == (1, 4, 64, 64, 3) and out.frames.dtype == np.float32
    assert 0.0 <= out.frames.min() and out.frames.max() <= 1.0
    assert out.token_weights.shape == (1, 77) and ((out.token_weights > 0) & (out.token_weights <= 1)).all()
    pt = pipe(photo, "the bear is dancing", seed=0, output_type="pt", **CALL).frames
    assert pt.shape == (1, 4, 3, 64, 64)
    assert np.allclose(pt.permute(0, 1, 3, 4, 2).numpy(), pipe(photo, "the bear is dancing", seed=0, **CALL).frames, atol=1e-6)
    pil = pipe(photo, "the bear is dancing", seed=0, output_type="pil", **CALL).frames
    assert len(pil) == 1 and len(pil[0]) == 4 and pil[0][0].size == (64, 64)
    latent = pipe(photo, "the bear is dancing", seed=0, output_type="latent", **CALL).frames
    assert latent.shape == (1, 4, 4, 16, 16)


def test_video_size_defaults_to_the_models(pipe, photo):
    frames = pipe(photo, "a dog runs", num_inference_steps=1, seed=0).frames
    assert frames.shape == (1, pipe.cfg.num_frames, pipe.cfg.resolution, pipe.cfg.resolution, 3)


def test_same_seed_same_video_different_seed_different(pipe, photo):
    a = pipe(photo, "a dog runs", seed=7, **CALL).frames
    b = pipe(photo, "a dog runs", seed=7, **CALL).frames
    c = pipe(photo, "a dog runs", seed=8, **CALL).frames
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    g = pipe(photo, "a dog runs", generator=torch.Generator().manual_seed(7), **CALL).frames
    assert np.array_equal(a, g)


def test_batch_equals_single_requests(pipe, photo):
    other = np.ascontiguousarray(photo[:, ::-1])
    batch = pipe([photo, other], ["a dog runs", "camera zooms in"], intensity=[2, 9], seed=[1, 2], **CALL)
    one = pipe(photo, "a dog runs", intensity=2, seed=1, **CALL)
    two = pipe(other, "camera zooms in", intensity=9, seed=2, **CALL)
    assert batch.frames.shape == (2, 4, 64, 64, 3)
    assert np.abs(batch.frames[0] - one.frames[0]).max() < 1e-4
    assert np.abs(batch.frames[1] - two.frames[0]).max() < 1e-4
    assert torch.allclose(batch.token_weights, torch.cat([one.token_weights, two.token_weights]), atol=1e-5)


def test_prior_inversion_pulls_first_frame_towards_reference(pipe, photo):
    """Latent-space MSE of frame 0 to the reference latent, with and without prior inversion."""
    reference, _ = pipe.encode_reference(pipe.preprocess_image(photo, 64, 64)[None])
    for seed in (0, 1):
        kw = dict(CALL, seed=seed, output_type="latent")
        on = pipe(photo, "a dog runs", **kw).frames
        off = pipe(photo, "a dog runs", prior_inversion=False, **kw).frames
        assert (on[:, :, 0] - reference).pow(2).mean() < (off[:, :, 0] - reference).pow(2).mean()
    # the blend weights fall linearly 0.033 -> 0.016 and can be changed
    a = pipe.blend_weights(4, 0.033, 0.016)
    assert torch.allclose(a, torch.tensor([0.033, 0.027333, 0.021667, 0.016]), atol=1e-5)
    off = pipe(photo, "a dog runs", prior_inversion=False, seed=0, **CALL).frames
    zero = pipe(photo, "a dog runs", prior_inversion_weights=(0.0, 0.0), seed=0, **CALL).frames
    assert np.abs(off - zero).max() < 1e-6


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(height=60), "height"),
        (dict(width=100), "width"),
        (dict(intensity=0), "intensity"),
        (dict(intensity=11), "intensity"),
        (dict(intensity=2.5), "intensity"),
        (dict(num_frames=33), "num_frames"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(guidance_rescale=1.5), "guidance_rescale"),
        (dict(guidance_interval=(0.6, 0.2)), "guidance_interval"),
        (dict(guidance_interval=(0.0, 1.5)), "guidance_interval"),
        (dict(prompt=""), "prompt"),
        (dict(prompt="   "), "prompt"),
        (dict(image=np.zeros((0, 10, 3), np.uint8)), "image"),
        (dict(image=Image.new("RGB", (0, 0))), "image"),
        (dict(image=np.zeros((8, 8, 3), np.float32)), "image"),
        (dict(image=None), "image"),
        (dict(output_type="gif"), "output_type"),
        (dict(prompt=["a", "b"], intensity=[1, 2, 3]), "batch sizes differ"),
        (dict(seed=0, generator=torch.Generator()), "seed"),
    ],
)
def test_input_errors_name_the_field(pipe, photo, kwargs, field):
    call = {**CALL, "image": photo, "prompt": "a dog runs", **kwargs}
    with pytest.raises(ValueError, match=field):
        pipe(**call)


def test_rgba_greyscale_and_palette_images_are_accepted(pipe, photo):
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    grey = photo[..., 0]
    palette = Image.fromarray(photo).convert("P")
    for image in (rgba, Image.fromarray(rgba, "RGBA"), grey, Image.fromarray(grey, "L"), palette, grey[..., None]):
        out = pipe(image, "a dog runs", seed=0, **dict(CALL, num_inference_steps=1))
        assert out.frames.shape == (1, 4, 64, 64, 3)
    # an opaque RGBA equals its RGB; a transparent one is composited over white
    assert np.array_equal(to_rgb(rgba), photo)
    transparent = rgba.copy()
    transparent[..., 3] = 0
    assert (to_rgb(transparent) == 255).all() and (to_rgb(Image.fromarray(transparent, "RGBA")) == 255).all()
    assert np.array_equal(to_rgb(grey), np.repeat(grey[..., None], 3, axis=-1))


def test_preprocess_is_the_shared_center_crop_resize(pipe, photo):
    assert np.array_equal(pipe.preprocess_image(photo, 64, 64), center_crop_resize(photo, 64, 64))
    assert pipe.preprocess_image(photo, 64, 64).shape == (64, 64, 3)


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_export_video_round_trip(tmp_path, pipe, photo, fmt):
    frames = pipe(photo, "a dog runs", seed=0, **CALL).frames[0]
    still = np.concatenate([frames, np.repeat(frames[-1:], 2, axis=0)])  # identical frames must survive (GIF)
    path = export_video(still, tmp_path / f"clip.{fmt}", fps=8)
    assert read_video(path).shape == (6, 64, 64, 3)
    # colours survive encoding (a smooth clip; the tiny model's frames are noise-like)
    smooth = np.stack([center_crop_resize(np.roll(photo, 4 * i, axis=1), 64, 64) for i in range(5)])
    decoded = read_video(export_video(smooth, tmp_path / f"smooth.{fmt}", fps=8))
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(float) - smooth).mean() < 6
    with pytest.raises(ValueError, match="format"):
        export_video(still, tmp_path / "clip.avi")
    # in memory (what the server sends): the same bytes as the file
    data = encode_video(smooth, fps=8, format=fmt)
    assert data == (tmp_path / f"smooth.{fmt}").read_bytes()


def test_guidance_rescale_changes_the_guided_prediction_only_when_on(pipe, photo):
    """guidance_rescale (diffusers' rescale_noise_cfg) acts on the guided prediction; 0 is plain guidance."""
    seen = []

    def keep(_pipe, i, t, tensors):
        seen.append(tensors["noise_pred"])
        return {}

    call = {**CALL, "num_inference_steps": 2, "guidance_scale": 4.0, "callback_on_step_end": keep,
            "callback_on_step_end_tensor_inputs": ["noise_pred"]}
    plain = pipe(photo, "a dog runs", seed=0, **call).frames
    plain_preds, seen[:] = list(seen), []
    rescaled = pipe(photo, "a dog runs", seed=0, guidance_rescale=1.0, **call).frames
    assert not np.allclose(plain, rescaled)
    assert not torch.allclose(plain_preds[0], seen[0])  # same inputs at step 0, different guided prediction
    assert np.array_equal(pipe(photo, "a dog runs", seed=0, guidance_rescale=0.0, **call).frames, plain)


def test_guidance_interval_guides_only_its_steps(pipe, photo):
    """guidance_interval=(start, stop): steps int(start*n) <= i < int(stop*n) are guided, the others
    run the conditional branch alone (what guidance 1 gives at every step)."""
    seen = []

    def keep(_pipe, i, t, tensors):
        seen.append(tensors["noise_pred"])
        return {}

    call = {**CALL, "num_inference_steps": 4, "callback_on_step_end": keep, "callback_on_step_end_tensor_inputs": ["noise_pred"]}
    runs = {}
    for name, kwargs in {"guided": dict(guidance_scale=4.0), "half": dict(guidance_scale=4.0, guidance_interval=(0.0, 0.5)),
                         "unguided": dict(guidance_scale=1.0)}.items():
        seen[:] = []
        runs[name] = (pipe(photo, "a dog runs", seed=0, **call, **kwargs).frames, list(seen))
    (guided, g), (half, h), (unguided, u) = runs["guided"], runs["half"], runs["unguided"]
    assert torch.equal(h[0], g[0]) and torch.equal(h[1], g[1])  # steps 0 and 1 guided, from the same latents
    assert not torch.allclose(h[2], g[2]) and not torch.allclose(h[2], u[2])  # the latents differ from step 2 on
    assert not np.allclose(half, guided) and not np.allclose(half, unguided)
    none = pipe(photo, "a dog runs", seed=0, guidance_scale=4.0, guidance_interval=(0.0, 0.0), **call).frames
    np.testing.assert_allclose(none, unguided, atol=1e-6)  # no step guided = guidance 1


def test_pipeline_save_load_round_trip(tmp_path, pipe, photo):
    """save_pretrained writes a diffusers pipeline folder; LivePhotoPipeline.from_pretrained and
    DiffusionPipeline.from_pretrained(..., trust_remote_code=True) both load it to the same video."""
    import json

    from diffusers import DiffusionPipeline

    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["livephoto_pipeline", "LivePhotoPipeline"]
    assert index["livephoto_adapter"] == ["model.adapter", "LivePhotoAdapter"] and index["motion_adapter"] == ["diffusers", "MotionAdapter"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["model_config"]["num_frames"] == pipe.cfg.num_frames
    for sub in ("unet", "motion_adapter", "livephoto_adapter", "scheduler", "vae", "text_encoder", "tokenizer", "image_encoder"):
        assert (tmp_path / sub).is_dir(), sub
    a = pipe(photo, "a dog runs", seed=3, **CALL).frames
    for loaded in (LivePhotoPipeline.from_pretrained(tmp_path), DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)):
        assert type(loaded) is LivePhotoPipeline and set(loaded.components) == set(index) - {"_class_name", "_diffusers_version", "model_config"}
        loaded.set_progress_bar_config(disable=True)
        assert np.array_equal(a, loaded(photo, "a dog runs", seed=3, **CALL).frames)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path)  # diffusers' own guard: the folder names a module to import

    # a folder saved before the sizes became the ``tiny`` section (flat tiny_* fields) loads the same model
    index["model_config"].update({f"tiny_{k}": v for k, v in index["model_config"].pop("tiny").items()})
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    for loaded in (LivePhotoPipeline.from_pretrained(tmp_path), DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)):
        assert loaded.cfg == pipe.cfg
        loaded.set_progress_bar_config(disable=True)
        assert np.array_equal(a, loaded(photo, "a dog runs", seed=3, **CALL).frames)


def test_fp16_variant_and_torch_dtype_as_in_diffusers(tmp_path, photo):
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "livephoto_adapter" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    half = LivePhotoPipeline.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    assert {p.dtype for p in half.unet.parameters()} == {torch.float16} and half.text_encoder.dtype == torch.float16
    full = LivePhotoPipeline.from_pretrained(tmp_path, variant="fp16")  # float32 unless torch_dtype says otherwise
    assert full.dtype == torch.float32
    state, saved = full.model.state_dict(), pipe.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())  # variant files keep the weights' dtype


def test_a_folder_whose_pipeline_module_was_changed_or_an_old_layout_is_refused(tmp_path, pipe):
    from common.config import ConfigError

    pipe.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "livephoto_pipeline.py").write_text("import os\n")
    with pytest.raises(ConfigError, match="livephoto_pipeline.py is not the file LivePhotoPipeline.save_pretrained writes"):
        LivePhotoPipeline.from_pretrained(tmp_path / "m")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text('{"format": "livephoto-1", "model": {}}')
    with pytest.raises(ConfigError, match="old 'livephoto-1' layout"):
        LivePhotoPipeline.from_pretrained(tmp_path / "old")


def test_other_scheduler_by_config(photo):
    pipe = LivePhotoPipeline.from_pretrained("tiny", scheduler="DPMSolverMultistepScheduler")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    out = pipe(photo, "a dog runs", seed=0, **CALL)
    assert np.isfinite(out.frames).all()


# --------------------------------------------------------------------------- pixel space


PIXEL = dict(autoencoder="pixel", pixel_patch=2, resolution=32, num_frames=4, image_encoder_size=32)


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_pixel_autoencoder_is_exact_and_sets_the_latent_shape(patch):
    from model import encoders
    from model.config import ModelConfig

    cfg = ModelConfig(**{**PIXEL, "pixel_patch": patch})
    vae = encoders.load_vae(cfg)
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    latents = encoders.encode_latents(vae, pixels)
    assert latents.shape == (3, 3 * patch * patch, 32 // patch, 32 // patch)
    assert torch.equal(encoders.decode_latents(vae, latents), pixels)
    dims = encoders.encoder_dims(cfg)
    assert (dims["latent_channels"], dims["vae_factor"]) == (3 * patch * patch, patch)
    assert encoders.vae_scale_factor(vae) == patch


def test_pixel_space_pipeline_shapes_channels_and_round_trip(tmp_path, photo):
    from model.config import ModelConfig

    from model.build import build_livephoto

    pipe = LivePhotoPipeline.from_components(build_livephoto(ModelConfig(**PIXEL)))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.model.latent_channels == 12
    assert pipe.model.unet.conv_in.in_channels == 12 + 12 + 1 + 1  # noised | reference | frame map | intensity
    kw = dict(num_frames=4, height=32, width=32, num_inference_steps=2, seed=3)
    out = pipe(photo, "the view slides left", intensity=4, **kw).frames
    assert out.shape == (1, 4, 32, 32, 3)
    pipe.save_pretrained(tmp_path / "pixel")
    assert not (tmp_path / "pixel" / "vae").exists()  # nothing to save: the identity has no weights
    again = LivePhotoPipeline.from_pretrained(tmp_path / "pixel")
    again.set_progress_bar_config(disable=True)
    assert np.array_equal(again(photo, "the view slides left", intensity=4, **kw).frames, out)


def test_pixel_space_is_refused_for_a_pretrained_base():
    from common.config import ConfigError
    from model.config import ModelConfig

    with pytest.raises(ConfigError, match="autoencoder"):
        ModelConfig(autoencoder="pixel", base_model="stable-diffusion-v1-5/stable-diffusion-v1-5")
    with pytest.raises(ConfigError, match="autoencoder"):
        ModelConfig(autoencoder="latent")
    with pytest.raises(ConfigError, match="pixel_patch"):
        ModelConfig(autoencoder="pixel", pixel_patch=3)


def test_diffusers_call_conventions(pipe, photo):
    """BaseOutput, return_dict, .to(dtype), num_videos_per_prompt, prompt_embeds, eta, callback_on_step_end."""
    out = pipe(photo, "a dog runs", seed=3, **CALL)
    assert out[0] is out.frames and out["frames"] is out.frames
    frames, weights = pipe(photo, "a dog runs", seed=3, return_dict=False, **CALL)
    assert np.array_equal(frames, out.frames) and torch.equal(weights, out.token_weights)
    assert pipe.to(torch.float32) is pipe and pipe.dtype == torch.float32

    # num_videos_per_prompt: copy j uses seed + j, so copy 0 is the single video
    many = pipe([photo, photo], ["a dog runs", "camera zooms in"], seed=[3, 10], num_videos_per_prompt=2, **CALL)
    assert many.frames.shape[0] == 4
    assert np.abs(many.frames[0] - out.frames[0]).max() < 1e-4
    assert np.abs(many.frames[1] - pipe(photo, "a dog runs", seed=4, **CALL).frames[0]).max() < 1e-4
    assert np.abs(many.frames[2] - pipe(photo, "camera zooms in", seed=10, **CALL).frames[0]).max() < 1e-4
    assert np.abs(many.frames[0] - many.frames[1]).max() > 1e-3

    # prompt_embeds: what encode_prompt returns gives the same video as the prompt
    text, mask = pipe.encode_prompt(["a dog runs"])
    neg, neg_mask = pipe.encode_prompt([""])
    embedded = pipe(photo, prompt_embeds=text, prompt_attention_mask=mask, negative_prompt_embeds=neg,
                    negative_prompt_attention_mask=neg_mask, seed=3, **CALL)
    assert np.abs(embedded.frames - out.frames).max() < 1e-5
    with pytest.raises(ValueError, match="prompt: give prompt or prompt_embeds"):
        pipe(photo, "a dog runs", prompt_embeds=text, **CALL)
    with pytest.raises(ValueError, match=r"prompt_embeds: must be a tensor \(batch, 77, 32\)"):
        pipe(photo, prompt_embeds=text[:, :10], **CALL)

    # eta reaches DDIM: eta > 0 adds noise from the generator, so the video changes
    noisy = pipe(photo, "a dog runs", seed=3, eta=1.0, **CALL).frames
    assert np.abs(noisy - out.frames).max() > 1e-4

    # callback_on_step_end sees every step and may replace the latents
    seen = []

    def zero_at_last_step(p, i, t, tensors):
        seen.append((i, int(t), tuple(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == CALL["num_inference_steps"] - 1 else {}

    zeroed = pipe(photo, "a dog runs", seed=3, output_type="latent", callback_on_step_end=zero_at_last_step,
                  callback_on_step_end_tensor_inputs=["latents", "noise_pred"], **CALL)
    assert [s[0] for s in seen] == [0, 1] and all(s[2] == ("latents", "noise_pred") for s in seen)
    assert torch.count_nonzero(zeroed.frames) == 0
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs: unknown"):
        pipe(photo, "a dog runs", callback_on_step_end_tensor_inputs=["prompt"], **CALL)
    with pytest.raises(ValueError, match="num_videos_per_prompt"):
        pipe(photo, "a dog runs", num_videos_per_prompt=0, **CALL)


def test_compile_unet_samples_the_same_video(photo):
    """torch.compile of the UNet (the eager backend here: dynamo's graph capture without code
    generation, which takes minutes on a CPU); the video is the eager one."""
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    eager = pipe(photo, "a dog runs", seed=3, **CALL).frames
    assert pipe.compile_unet(backend="eager") is pipe
    assert isinstance(pipe.model.unet, torch._dynamo.eval_frame.OptimizedModule)
    compiled_once = pipe.model.unet
    assert pipe.compile_unet(backend="eager").model.unet is compiled_once  # compiling twice keeps one wrapper
    compiled = pipe(photo, "a dog runs", seed=3, **CALL).frames
    assert np.abs(compiled - eager).max() < 1e-5


def test_push_to_hub_and_from_pretrained_by_hub_id_round_trip_through_the_cache(photo, tmp_path, monkeypatch):
    """Offline: the hub is stood in for by its cache layout (models--owner--name/refs/main +
    snapshots/<commit>/); push_to_hub's upload lands there, from_pretrained("owner/name") reads it."""
    import shutil

    import huggingface_hub

    from common.config import ConfigError

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    uploads = []

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        commit = f"{len(uploads) + 1:040x}"
        shutil.copytree(folder_path, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        uploads.append((repo_id, sorted(p.name for p in (repo / "snapshots" / commit).iterdir()), commit_message))
        return f"https://huggingface.co/{repo_id}/commit/{commit}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    url = pipe.push_to_hub("someone/livephoto-tiny")
    assert url.endswith("/commit/" + "1".rjust(40, "0"))
    assert uploads[0][0] == "someone/livephoto-tiny" and {"model_index.json", "livephoto_pipeline.py", "livephoto_adapter", "motion_adapter", "scheduler"} <= set(uploads[0][1])
    loaded = LivePhotoPipeline.from_pretrained("someone/livephoto-tiny", local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    a, b = pipe(photo, "a dog runs", seed=1, **CALL).frames, loaded(photo, "a dog runs", seed=1, **CALL).frames
    assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match=r"'someone/other' is no folder on this machine.*downloads are off.*hf download someone/other"):
        LivePhotoPipeline.from_pretrained("someone/other", local_files_only=True)
    with pytest.raises(ValueError, match="repo_id: required"):
        pipe.save_pretrained(tmp_path / "x", push_to_hub=True)


def test_a_pipeline_around_a_training_network_leaves_its_flags_and_mode():
    """Training logs sample videos through a pipeline around its own network: the same modules,
    whose trainable flags and train mode stay as training set them."""
    from model.build import build_livephoto
    from model.config import ModelConfig, model_preset

    c = build_livephoto(ModelConfig(**model_preset("tiny")))
    c.model.set_trainable(["motion", "base"])
    c.model.train()
    flags = {n: p.requires_grad for n, p in c.model.named_parameters()}
    pipe = LivePhotoPipeline.from_components(c)
    assert pipe.unet is c.model.unet and pipe.livephoto_adapter is c.model.adapter
    assert {n: p.requires_grad for n, p in c.model.named_parameters()} == flags and c.model.unet.training
    assert not any(p.requires_grad for p in c.model.adapter.reweight.parameters())  # "reweight" was left out above
