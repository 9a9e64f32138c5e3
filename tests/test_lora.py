"""LoRAs fused into the frozen SD 1.5 base (``--model.lora``): files in the two formats people
share (diffusers' ``pytorch_lora_weights.safetensors`` and kohya / A1111 ``lora_unet_*``),
written here with known low-rank factors so the fused weights can be checked exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from model import build
from model.lora import parse_lora
from model.pipeline import LivePhotoPipeline
from model.sources import SourcesMissingError, missing_sources

from hub_standins import sd15_folder, tiny

UNET_LAYERS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
)
TEXT_LAYER = "encoder.layers.0.self_attn.q_proj"  # transformers 5 flattens CLIPTextModel; LoRAs say text_model.encoder...


def _factors(module, layer: str, rank: int, seed: int):
    out_dim, in_dim = dict(module.named_modules())[layer].weight.shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, in_dim, generator=g) * 0.1, torch.randn(out_dim, rank, generator=g) * 0.1  # A (down), B (up)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    sd = sd15_folder(root / "stable-diffusion-v1-5")
    cfg = tiny(base_model=str(sd), local_files_only=True)
    plain = build.build_livephoto(cfg)
    return {"root": root, "cfg": cfg, "unet2d": build.build_unet2d(cfg), "text_encoder": plain.text_encoder, "plain": plain}


@pytest.fixture(scope="module")
def diffusers_lora(base):
    """A folder with ``pytorch_lora_weights.safetensors`` in diffusers' PEFT keys (no alphas: scale alpha/rank = 1)."""
    folder = base["root"] / "style-lora"
    folder.mkdir()
    state, deltas = {}, {}
    for i, layer in enumerate(UNET_LAYERS):
        a, b = _factors(base["unet2d"], layer, rank=4, seed=i)
        state[f"unet.{layer}.lora_A.weight"], state[f"unet.{layer}.lora_B.weight"] = a, b
        deltas[layer] = b @ a
    a, b = _factors(base["text_encoder"], TEXT_LAYER, rank=4, seed=9)
    state[f"text_encoder.text_model.{TEXT_LAYER}.lora_A.weight"], state[f"text_encoder.text_model.{TEXT_LAYER}.lora_B.weight"] = a, b
    deltas["text"] = b @ a
    save_file(state, folder / "pytorch_lora_weights.safetensors")
    return folder, deltas


@pytest.fixture(scope="module")
def kohya_lora(base):
    """A single ``.safetensors`` file in the kohya / A1111 layout: lora_down / lora_up / alpha per layer."""
    path = base["root"] / "detail_tweaker.safetensors"
    state, deltas = {}, {}
    layer = UNET_LAYERS[0]
    a, b = _factors(base["unet2d"], layer, rank=2, seed=3)
    key = "lora_unet_" + layer.replace(".", "_")
    state.update({f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b, f"{key}.alpha": torch.tensor(1.0)})
    deltas[layer] = 1.0 / 2 * b @ a
    a, b = _factors(base["text_encoder"], TEXT_LAYER, rank=2, seed=4)
    key = "lora_te_text_model_" + TEXT_LAYER.replace(".", "_")
    state.update({f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b, f"{key}.alpha": torch.tensor(4.0)})
    deltas["text"] = 4.0 / 2 * b @ a
    save_file(state, path)
    return path, deltas


def _weight(module, layer: str) -> torch.Tensor:
    return dict(module.named_modules())[layer].weight.detach()


def _check_fused(components, plain, deltas: dict[str, torch.Tensor], scale: float) -> None:
    for layer in UNET_LAYERS:
        expected = _weight(plain.model.unet, layer) + scale * deltas.get(layer, 0)
        assert torch.allclose(_weight(components.model.unet, layer), expected, atol=1e-6), layer
    expected = _weight(plain.text_encoder, TEXT_LAYER) + scale * deltas["text"]
    assert torch.allclose(_weight(components.text_encoder, TEXT_LAYER), expected, atol=1e-6)


def test_parse_lora_reads_an_optional_scale():
    assert parse_lora("style.safetensors:0.7") == ("style.safetensors", 0.7)
    assert parse_lora("owner/name") == ("owner/name", 1.0)
    assert parse_lora("C:/loras/style.safetensors") == ("C:/loras/style.safetensors", 1.0)


def test_a_diffusers_lora_is_fused_into_the_frozen_base_at_its_scale(base, diffusers_lora):
    folder, deltas = diffusers_lora
    components = build.build_livephoto(tiny(**{**vars_of(base["cfg"]), "lora": (f"{folder}:0.5",)}))
    plain = base["plain"]
    assert any(not torch.equal(_weight(components.model.unet, layer), _weight(plain.model.unet, layer)) for layer in UNET_LAYERS)
    _check_fused(components, plain, deltas, 0.5)
    # plain frozen modules: no PEFT layers left, the same trainable groups as without the LoRA
    for module in (components.model, components.text_encoder):
        assert not [n for n, _ in module.named_modules() if "lora" in n.lower()]
    trainable = sorted(n for n, p in components.model.named_parameters() if p.requires_grad)
    assert trainable == sorted(n for n, p in plain.model.named_parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in components.text_encoder.parameters())
    # every frozen weight the LoRA does not touch is the base's (the new parts start from the fused base)
    touched = {f"{layer}.weight" for layer in UNET_LAYERS} | {n.removeprefix("unet.") for n in trainable}
    fused, ref = components.model.unet.state_dict(), plain.model.unet.state_dict()
    assert [k for k in ref if k not in touched and not torch.equal(fused[k], ref[k])] == []


def test_a_kohya_file_is_fused_with_its_alphas(base, kohya_lora):
    path, deltas = kohya_lora
    components = build.build_livephoto(tiny(**{**vars_of(base["cfg"]), "lora": (str(path),)}))
    _check_fused(components, base["plain"], deltas, 1.0)


def test_a_lora_saved_with_its_adapter_config_uses_that_alpha(base, tmp_path):
    """diffusers' training scripts save LoraConfig (r, lora_alpha) in the file's metadata: alpha/rank != 1."""
    from diffusers import StableDiffusionPipeline

    layer = UNET_LAYERS[0]
    a, b = _factors(base["unet2d"], layer, rank=4, seed=11)
    ta, tb = _factors(base["text_encoder"], TEXT_LAYER, rank=4, seed=12)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers={f"{layer}.lora_A.weight": a, f"{layer}.lora_B.weight": b},
        text_encoder_lora_layers={f"text_model.{TEXT_LAYER}.lora_A.weight": ta, f"text_model.{TEXT_LAYER}.lora_B.weight": tb},
        unet_lora_adapter_metadata={"r": 4, "lora_alpha": 8, "target_modules": ["to_k"]},
        text_encoder_lora_adapter_metadata={"r": 4, "lora_alpha": 2, "target_modules": ["q_proj"]},
        safe_serialization=True,
    )
    components = build.build_livephoto(tiny(**{**vars_of(base["cfg"]), "lora": (str(tmp_path),)}))
    _check_fused(components, base["plain"], {layer: 8 / 4 * b @ a, "text": 2 / 4 * tb @ ta}, 1.0)


def test_several_loras_add_up(base, diffusers_lora, kohya_lora):
    (folder, d1), (path, d2) = diffusers_lora, kohya_lora
    components = build.build_livephoto(tiny(**{**vars_of(base["cfg"]), "lora": (str(folder), f"{path}:2")}))
    both = {k: d1.get(k, 0) + 2 * d2.get(k, 0) for k in {*d1, *d2}}
    _check_fused(components, base["plain"], both, 1.0)


def test_a_saved_model_fuses_its_loras_again_and_lora_override_replaces_them(base, diffusers_lora, tmp_path):
    folder, deltas = diffusers_lora
    cfg = tiny(**{**vars_of(base["cfg"]), "lora": (f"{folder}:0.5",)})
    pipe = LivePhotoPipeline.from_components(build.build_livephoto(cfg))
    pipe.save_pretrained(tmp_path / "model")  # a pretrained base: only the trainable parts are saved
    loaded = LivePhotoPipeline.from_pretrained(tmp_path / "model")
    assert loaded.cfg.lora == (f"{folder}:0.5",)
    _check_fused(loaded, base["plain"], deltas, 0.5)
    without = LivePhotoPipeline.from_pretrained(tmp_path / "model", lora=())
    _check_fused(without, base["plain"], {"text": torch.zeros_like(deltas["text"])}, 0.0)


def test_a_model_on_a_random_base_keeps_its_fused_weights_without_the_file(base, kohya_lora, tmp_path):
    import shutil

    path = tmp_path / "gone.safetensors"
    shutil.copy(kohya_lora[0], path)
    pipe = LivePhotoPipeline.from_components(build.build_livephoto(tiny(lora=(str(path),))))
    pipe.save_pretrained(tmp_path / "model")  # tiny: full weights, the LoRA included
    path.unlink()
    loaded = LivePhotoPipeline.from_pretrained(tmp_path / "model")
    saved, again = pipe.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    assert torch.equal(_weight(loaded.text_encoder, TEXT_LAYER), _weight(pipe.text_encoder, TEXT_LAYER))


def test_a_lora_for_another_base_is_an_error_naming_it(base, tmp_path):
    path = tmp_path / "sdxl_style.safetensors"
    layer = "down_blocks.2.attentions.0.transformer_blocks.9.attn2.to_k"  # SDXL depth; not in SD 1.5
    save_file({f"unet.{layer}.lora_A.weight": torch.zeros(4, 32), f"unet.{layer}.lora_B.weight": torch.zeros(32, 4)}, path)
    with pytest.raises(ValueError, match=r"lora\[0\]: .*sdxl_style.safetensors' has 1 of 1 unet layers this model does not "
                                         r"have .*is it a LoRA for SD 1.5\?"):
        build.build_livephoto(tiny(**{**vars_of(base["cfg"]), "lora": (str(path),)}))


def test_missing_loras_are_listed_with_the_other_missing_parts(base, tmp_path):
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    cfg = tiny(**{**vars_of(base["cfg"]), "lora": (str(tmp_path / "nope.safetensors:0.8"), str(empty)),
                  "motion_adapter": str(tmp_path / "no-adapter")})
    found = {(part.label, problem) for part, _, problem in missing_sources(cfg)}
    assert ("LoRA 0", f"no file or folder '{tmp_path / 'nope.safetensors'}' (and it is not a hub id)") in found
    assert ("LoRA 1", f"{empty} has no *.safetensors") in found
    with pytest.raises(SourcesMissingError, match=r"cannot load 3 pretrained component\(s\)[\s\S]*LoRA 0 \(--model.lora "):
        build.build_livephoto(cfg)


def test_the_lora_flag_is_the_same_in_animate_serve_and_the_jobs():
    from common.config import load_from_argv
    from evaluation.config import PRESETS, EvalConfig
    from model import animate
    from serve.__main__ import parse
    from training.config import TrainConfig, PRESETS as TRAIN_PRESETS

    args = animate.parse_args(["--model", "m", "--image", "i", "--prompt", "p", "--out", "o.gif",
                                             "--model.lora", "a.safetensors:0.5"])
    assert animate.sources_of(args).overrides() == {"lora": ("a.safetensors:0.5",)}
    args = animate.parse_args(["--model", "m", "--image", "i", "--prompt", "p", "--out", "o.gif",
                                             "--model.lora", "[a.safetensors, owner/b:0.3]"])
    assert animate.sources_of(args).overrides() == {"lora": ("a.safetensors", "owner/b:0.3")}
    cfg, _, _ = parse(["--model", "m", "--model.lora", "a.safetensors"])
    assert cfg.sources.overrides() == {"lora": ("a.safetensors",)}
    ev = load_from_argv(EvalConfig, ["--preset", "mini", "--manifest.csv", "m.csv", "--output.dir", "out",
                                     "--model.lora", "[a.safetensors, b.safetensors]"], PRESETS)
    assert ev.model.overrides() == {"lora": ("a.safetensors", "b.safetensors")}
    tr = load_from_argv(TrainConfig, ["--preset", "tiny", "--data.dir", "d", "--output.dir", "o",
                                      "--model.lora", "a.safetensors:0.7"], TRAIN_PRESETS)
    assert tr.model.lora == ("a.safetensors:0.7",)


def vars_of(cfg) -> dict:
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
