"""A single-file SD 1.5 checkpoint as the base (``--model.base_model model.safetensors``): the
stand-in SD folder written as one original-layout file (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.transformer.*``, as civitai fine-tunes are shared)
loads to exactly the folder's weights, offline."""

from __future__ import annotations

import pytest
import torch

from model import build
from model.encoders import WeightsNotFoundError
from model.pipeline import LivePhotoPipeline
from model.sources import SourcesMissingError, missing_sources

from hub_standins import sd15_folder, sd15_single_file, tiny


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("single-file")
    sd = sd15_folder(root / "stable-diffusion-v1-5")
    return {"root": root, "folder": sd, "plain": build.build_livephoto(tiny(base_model=str(sd), local_files_only=True))}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_single_file_loads_to_the_folders_weights(base, suffix):
    path = sd15_single_file(base["folder"], base["root"] / f"dreamshaper_8{suffix}")
    cfg = tiny(base_model=str(path), base_config=str(base["folder"]), local_files_only=True)
    assert missing_sources(cfg) == []
    components, plain = build.build_livephoto(cfg), base["plain"]
    assert _same(components.model, plain.model) and _same(components.vae, plain.vae)
    assert _same(components.text_encoder, plain.text_encoder)
    assert components.tokenizer("the flag waves").input_ids == plain.tokenizer("the flag waves").input_ids
    assert dict(components.scheduler.config) == dict(plain.scheduler.config)


def test_a_model_trained_on_a_single_file_reloads_its_base_from_it(base, tmp_path):
    path = sd15_single_file(base["folder"], tmp_path / "fine-tune.safetensors")
    cfg = tiny(base_model=str(path), base_config=str(base["folder"]), local_files_only=True)
    pipe = LivePhotoPipeline.from_components(build.build_livephoto(cfg))
    pipe.save_pretrained(tmp_path / "model")
    saved = sorted(p.name for p in (tmp_path / "model").iterdir() if p.is_dir())
    assert saved == ["image_encoder", "livephoto_adapter", "motion_adapter", "scheduler"]  # the SD 1.5 parts stay in the file
    loaded = LivePhotoPipeline.from_pretrained(tmp_path / "model")
    assert loaded.cfg.base_model == str(path) and _same(loaded.model, pipe.model) and _same(loaded.vae, pipe.vae)


def test_a_missing_file_or_config_folder_is_listed_with_its_flag(base, tmp_path):
    cfg = tiny(base_model=str(tmp_path / "gone.safetensors"), base_config=str(tmp_path / "no-configs"), local_files_only=True)
    found = {(part.label, part.field, problem) for part, _, problem in missing_sources(cfg)}
    assert ("SD 1.5 checkpoint", "base_model", f"no file '{tmp_path / 'gone.safetensors'}'") in found
    assert ("SD 1.5 UNet", "base_config", f"no folder '{tmp_path / 'no-configs'}' (and it is not a hub id)") in found
    with pytest.raises(SourcesMissingError, match=r"SD 1.5 checkpoint \(--model.base_model .*gone.safetensors\): no file"):
        build.build_livephoto(cfg)
    # a config folder needs the configs, not the weights
    configs = tmp_path / "configs"
    for sub in ("unet", "vae", "text_encoder", "scheduler", "tokenizer"):
        for f in (base["folder"] / sub).iterdir():
            if f.suffix in (".json", ".txt"):
                (configs / sub).mkdir(parents=True, exist_ok=True)
                (configs / sub / f.name).write_bytes(f.read_bytes())
    path = sd15_single_file(base["folder"], tmp_path / "x.safetensors")
    assert missing_sources(tiny(base_model=str(path), base_config=str(configs), local_files_only=True)) == []


def test_sd15s_own_configs_are_the_default(base, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    from model.build import SD15_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG
    from model.encoders import build_tokenizer
    from model.config import ModelConfig
    from model.single_file import base_configs

    path = sd15_single_file(base["folder"], tmp_path / "sd15.safetensors")
    folder = base_configs(ModelConfig(base_model=str(path)))
    unet = UNet2DConditionModel.load_config(folder, subfolder="unet")
    assert all(unet[k] == (list(v) if isinstance(v, tuple) else v) for k, v in SD15_UNET_CONFIG.items())
    vae = AutoencoderKL.load_config(folder, subfolder="vae")
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["scaling_factor"] == SD15_VAE_CONFIG["scaling_factor"]
    assert CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder").hidden_size == SD15_TEXT_CONFIG["hidden_size"]
    prompt = "the camera zooms in on the lighthouse"
    assert CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")(prompt).input_ids == build_tokenizer(ModelConfig())(prompt).input_ids
    # the tiny stand-in is not SD 1.5-sized: the error says where the configs come from
    with pytest.raises(WeightsNotFoundError, match=r"SD 1.5 UNet .*expected shape.*--model.base_config"):
        build.build_unet2d(tiny(base_model=str(path), local_files_only=True))


def test_the_base_config_flag_is_in_animate_and_serve():
    from model import animate
    from serve.__main__ import parse

    args = animate.parse_args(["--model", "m", "--image", "i", "--prompt", "p", "--out", "o.gif",
                               "--model.base_model", "/data/dreamshaper_8.safetensors", "--model.base_config", "/data/sd15"])
    assert animate.sources_of(args).overrides() == {"base_model": "/data/dreamshaper_8.safetensors", "base_config": "/data/sd15"}
    cfg, _, _ = parse(["--model", "m", "--model.base_model", "/data/x.ckpt"])
    assert cfg.sources.overrides() == {"base_model": "/data/x.ckpt"}


@pytest.mark.parametrize("release,mid_block,frames", [("mm_sd_v15.ckpt", False, 24), ("mm_sd_v15_v2.safetensors", True, 32)])
def test_an_animatediff_file_loads_with_its_config_read_off_the_tensors(tmp_path, release, mid_block, frames):
    """v1 (no mid block, 24-frame positional table) and v2 (mid block, 32) as the AnimateDiff
    repository ships them; the LivePhoto network runs on exactly their motion modules."""
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    from hub_standins import motion_adapter_to_original

    cfg = tiny()
    unet2d = build.build_unet2d(cfg)
    torch.manual_seed(5)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_norm_num_groups=8,
                            motion_max_seq_length=frames, use_motion_mid_block=mid_block)
    state = motion_adapter_to_original(adapter.state_dict(), frames)
    assert not any(k.startswith("mid_block.") for k in state) if not mid_block else any(k.startswith("mid_block.") for k in state)
    path = tmp_path / release
    torch.save({"state_dict": state}, path) if path.suffix == ".ckpt" else save_file(state, path)
    loaded = build.build_motion_adapter(tiny(motion_adapter=str(path)), unet2d)
    assert loaded.config.motion_max_seq_length == frames and loaded.config.use_motion_mid_block == mid_block
    assert _same(loaded, adapter)
    model = build.build_network(tiny(motion_adapter=str(path)))
    motion = {k: v for k, v in model.unet.state_dict().items() if "motion_modules" in k}
    theirs = adapter.state_dict()
    assert motion and set(motion) <= set(theirs) and all(torch.equal(v, theirs[k]) for k, v in motion.items())


def test_a_file_that_is_not_a_motion_module_is_an_error_naming_it(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "not_motion.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.zeros(4)}, path)
    with pytest.raises(WeightsNotFoundError, match=r"AnimateDiff motion adapter .*not an AnimateDiff motion module checkpoint"):
        build.build_motion_adapter(tiny(motion_adapter=str(path)), build.build_unet2d(tiny()))
    missing = tiny(motion_adapter=str(tmp_path / "mm_sd_v15_v3.ckpt"))
    assert [(p.label, problem) for p, _, problem in missing_sources(missing)] == [
        ("AnimateDiff motion adapter", f"no file '{tmp_path / 'mm_sd_v15_v3.ckpt'}'")]


def test_a_missing_relative_file_is_not_called_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourcesMissingError) as info:
        build.build_livephoto(tiny(base_model="dreamshaper_8.safetensors", lora=("style.safetensors",)))
    text = str(info.value)
    assert "no file 'dreamshaper_8.safetensors'" in text and "LoRA 0 (--model.lora style.safetensors)" in text
    assert "hf download" not in text


def test_a_single_file_base_is_read_once_for_its_three_components(base, tmp_path, monkeypatch):
    import diffusers.loaders.single_file_model as model_loader
    import diffusers.loaders.single_file_utils as utils

    path = sd15_single_file(base["folder"], tmp_path / "fine-tune.safetensors")
    reads, real = [], utils.load_single_file_checkpoint

    def counted(p, **kw):
        if isinstance(p, str):  # a dict is what read_once hands on: no read
            reads.append(p)
        return real(p, **kw)

    for module in (utils, model_loader):  # from_single_file calls its own import of it
        monkeypatch.setattr(module, "load_single_file_checkpoint", counted)
    cfg = tiny(base_model=str(path), base_config=str(base["folder"]), local_files_only=True)
    components = build.build_livephoto(cfg)
    assert reads == [str(path)]  # UNet, VAE and CLIP from one read
    assert _same(components.model, base["plain"].model) and _same(components.text_encoder, base["plain"].text_encoder)
    pipe = LivePhotoPipeline.from_components(components)
    pipe.save_pretrained(tmp_path / "model")
    reads.clear()
    LivePhotoPipeline.from_pretrained(tmp_path / "model")
    assert reads == [str(path)]
