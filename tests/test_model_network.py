"""The LivePhoto network (tiny preset, CPU): shapes, zero-init equivalence, trainable groups, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.config import ConfigError, to_dict
from model import build
from model.config import ModelConfig, model_preset
from model.encoders import WeightsNotFoundError, encoder_dims
from model.adapter import ContentAttnProcessor
from model.network import TRAINABLE_GROUPS, LivePhotoModel, input_channels

BATCH, FRAMES, LATENT = 2, 4, 16


def tiny_cfg(**overrides) -> ModelConfig:
    return ModelConfig(**{**model_preset("tiny"), **overrides})


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return tiny_cfg()


@pytest.fixture(scope="module")
def model(cfg) -> LivePhotoModel:
    return build.build_network(cfg).eval()


def make_inputs(cfg: ModelConfig, seed: int = 0, frames: int = FRAMES) -> dict:
    dims = encoder_dims(cfg)
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(BATCH, 77, dtype=torch.long)
    mask[0, :5] = 1
    mask[1, :9] = 1
    return dict(
        sample=torch.randn(BATCH, 4, frames, LATENT, LATENT, generator=g),
        timestep=torch.tensor([10, 700]),
        encoder_hidden_states=torch.randn(BATCH, 77, dims["text_dim"], generator=g),
        reference_latents=torch.randn(BATCH, 4, LATENT, LATENT, generator=g),
        intensity=torch.tensor([1, 10]),
        image_tokens=torch.randn(BATCH, dims["image_tokens"], dims["image_dim"], generator=g),
        attention_mask=mask,
    )


def test_forward_shapes(model, cfg):
    inputs = make_inputs(cfg)
    with torch.no_grad():
        out = model(**inputs)
    assert out.sample.shape == (BATCH, 4, FRAMES, LATENT, LATENT)
    assert out.token_weights.shape == (BATCH, 77)
    assert model.unet.conv_in.in_channels == 10 == model.unet.config.in_channels
    assert model.content_proj.in_features == encoder_dims(cfg)["image_dim"]
    assert model.content_proj.out_features == model.unet.config.cross_attention_dim
    assert model.max_frames == cfg.tiny.motion_max_seq_length
    procs = [p for name, p in model.unet.attn_processors.items() if isinstance(p, ContentAttnProcessor)]
    assert procs and all(".attn2." in n and "motion_modules" not in n
                         for n, p in model.unet.attn_processors.items() if isinstance(p, ContentAttnProcessor))


def test_zero_init_equals_base_unet(model, cfg):
    """New channels, content branch and fresh parts start at zero: the network equals the base
    UNetMotionModel on the noised latent, fed the same re-weighted text embeddings (no token
    mask: the base attends to every position, as SD 1.5 does)."""
    base = build.build_base_unet(cfg).eval()
    inputs = {**make_inputs(cfg), "attention_mask": None}
    with torch.no_grad():
        out = model(**inputs)
        context = inputs["encoder_hidden_states"] * out.token_weights.unsqueeze(-1)
        ref = base(inputs["sample"], inputs["timestep"], context.repeat_interleave(FRAMES, dim=0)).sample
    assert (out.sample - ref).abs().max().item() <= 1e-5


def test_zero_init_equivalence_without_reweighting(cfg):
    model = build.build_network(tiny_cfg(use_text_reweighting=False)).eval()
    base = build.build_base_unet(cfg).eval()
    inputs = {**make_inputs(cfg), "attention_mask": None}
    with torch.no_grad():
        out = model(**inputs)
        ref = base(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"].repeat_interleave(FRAMES, 0)).sample
    assert out.token_weights is None
    assert (out.sample - ref).abs().max().item() <= 1e-5


def test_conditions_change_output_once_trained(cfg):
    """Every new input reaches the output once its zero-initialised weights move."""
    model = build.build_network(cfg).eval()
    with torch.no_grad():
        model.unet.conv_in.weight[:, 4:].normal_(0, 0.1)
        for proc in model.unet.attn_processors.values():
            if isinstance(proc, ContentAttnProcessor):
                proc.out_ip.weight.normal_(0, 0.1)
    inputs = make_inputs(cfg)
    with torch.no_grad():
        out = model(**inputs).sample
        for name, change in [
            ("reference_latents", inputs["reference_latents"] + 1),
            ("intensity", torch.tensor([5, 3])),
            ("image_tokens", inputs["image_tokens"] + 1),
        ]:
            other = model(**{**inputs, name: change}).sample
            assert (other - out).abs().max() > 1e-4, name


def test_padding_is_masked_in_cross_attention(cfg):
    """With a token mask, what sits in the padding positions cannot change the prediction;
    without one (SD 1.5's way) it does."""
    model = build.build_network(tiny_cfg(use_text_reweighting=False)).eval()
    inputs = make_inputs(cfg)
    padded = inputs["encoder_hidden_states"].clone()
    padded[0, 5:] += 3.0
    padded[1, 9:] -= 3.0
    with torch.no_grad():
        out = model(**inputs).sample
        same = model(**{**inputs, "encoder_hidden_states": padded}).sample
        unmasked = model(**{**inputs, "attention_mask": None}).sample
        unmasked_padded = model(**{**inputs, "attention_mask": None, "encoder_hidden_states": padded}).sample
    assert (out - same).abs().max().item() <= 1e-5
    assert (unmasked - unmasked_padded).abs().max().item() > 1e-3
    with pytest.raises(ValueError, match="attention_mask: expected shape"):
        model(**{**inputs, "attention_mask": inputs["attention_mask"][:, :10]})


def test_token_weights_cannot_shut_the_text_path(cfg):
    """Normalised re-weighting: every caption's strongest real token has weight 1, even when the
    sigmoid is driven far into saturation, and the weights still follow the logits' differences
    there (so the gradient has not vanished). The paper's plain sigmoid shuts instead."""
    inputs = make_inputs(cfg)
    real = inputs["attention_mask"] > 0
    model = build.build_network(cfg).eval()
    with torch.no_grad():
        model.reweight.head.bias.fill_(-40.0)  # sigmoid ~ 4e-18: a plain gate is shut
        w = model.token_weights(inputs["encoder_hidden_states"], inputs["attention_mask"])
        assert torch.allclose(w.masked_fill(~real, 0).amax(dim=1), torch.ones(BATCH))
        assert w[real].min() < 0.99  # not flattened to 1 either: the ratios survive
        other = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"] + 1.0}
        assert (model(**inputs).sample - model(**other).sample).abs().max().item() > 1e-4
    emb = inputs["encoder_hidden_states"].clone().requires_grad_(True)
    model.token_weights(emb, inputs["attention_mask"])[real].sum().backward()
    assert emb.grad.abs().sum() > 0
    plain = build.build_network(tiny_cfg(reweight_normalize=False)).eval()
    with torch.no_grad():
        plain.reweight.head.bias.fill_(-40.0)
        assert plain.token_weights(inputs["encoder_hidden_states"], inputs["attention_mask"]).max() < 1e-12


def test_token_weights_in_unit_interval_and_padding_masked(model, cfg):
    inputs = make_inputs(cfg)
    with torch.no_grad():
        w = model.token_weights(inputs["encoder_hidden_states"], inputs["attention_mask"])
        assert w.shape == (BATCH, 77)
        assert ((w > 0) & (w <= 1)).all()
        # padding keys are masked: changing padding embeddings leaves the real tokens' weights unchanged
        emb = inputs["encoder_hidden_states"].clone()
        emb[0, 5:] += torch.randn(emb[0, 5:].shape, generator=torch.Generator().manual_seed(1))
        w2 = model.token_weights(emb, inputs["attention_mask"])
        assert torch.allclose(w[0, :5], w2[0, :5], atol=1e-6)
        assert not torch.allclose(w[0, 5:], w2[0, 5:])
    # train and eval modes agree (no dropout, no fast-path difference)
    model.reweight.train()
    w3 = model.token_weights(inputs["encoder_hidden_states"], inputs["attention_mask"]).detach()
    model.reweight.eval()
    assert torch.allclose(w, w3, atol=1e-5)


def test_trainable_groups_by_name(model):
    groups = model.parameter_groups()
    assert all(groups[g] for g in TRAINABLE_GROUPS)
    names = {g: [n for n, _ in ps] for g, ps in groups.items()}
    assert names["conv_in"] == ["unet.conv_in.weight", "unet.conv_in.bias"]
    assert all(".motion_modules." in n for n in names["motion"])
    assert all(n.startswith("content_proj.") or ".attn2.processor." in n for n in names["content"])
    assert all(n.startswith("reweight.") for n in names["reweight"])
    # frozen: the SD 1.5 blocks (resnets, spatial attention, time embedding, conv_out)
    assert not any(p.requires_grad for _, p in groups["frozen"])
    assert any(".resnets." in n for n in names["frozen"]) and any(".attentions." in n for n in names["frozen"])
    assert "unet.conv_out.weight" in names["frozen"] and "unet.time_embedding.linear_1.weight" in names["frozen"]
    trainable = {id(p) for g in TRAINABLE_GROUPS for _, p in groups[g]}
    assert {id(p) for p in model.trainable_parameters()} == trainable


def test_set_trainable_subset_and_unknown_group(cfg):
    model = build.build_network(cfg)
    model.set_trainable(["motion"])
    assert {model.group_of(n) for n, p in model.named_parameters() if p.requires_grad} == {"motion"}
    with pytest.raises(ValueError, match="trainable"):
        model.set_trainable(["conv_in", "vae"])


def test_backward_reaches_only_trainable_params(cfg):
    model = build.build_network(cfg).train()
    model.enable_gradient_checkpointing()
    inputs = make_inputs(cfg, frames=2)
    out = model(**inputs)
    out.sample.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if model.group_of(name) is None:
            assert p.grad is None, name
    assert model.unet.conv_in.weight.grad[:, 4:].abs().sum() > 0  # the new channels learn from step 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in model.parameter_groups()["reweight"])
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_frozen_encoders_are_frozen(cfg):
    components = build.build_livephoto(cfg)
    for module in (components.vae, components.text_encoder, components.image_encoder):
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training


@pytest.mark.parametrize(
    "switch, channels",
    [("use_reference_latent", 6), ("use_frame_embedding", 9), ("use_intensity", 9)],
)
def test_input_channel_switches(switch, channels):
    c = tiny_cfg(**{switch: False})
    assert input_channels(c) == channels
    model = build.build_network(c).eval()
    assert model.unet.conv_in.in_channels == channels
    inputs = make_inputs(c)
    drop = {"use_reference_latent": "reference_latents", "use_intensity": "intensity"}.get(switch)
    if drop:
        inputs[drop] = None  # not needed once switched off
    with torch.no_grad():
        assert model(**inputs).sample.shape == (BATCH, 4, FRAMES, LATENT, LATENT)


def test_module_switches():
    model = build.build_network(tiny_cfg(use_content_encoder=False, use_text_reweighting=False))
    assert model.content_proj is None and model.reweight is None
    assert not any(isinstance(p, ContentAttnProcessor) for p in model.unet.attn_processors.values())
    groups = model.parameter_groups()
    assert not groups["content"] and not groups["reweight"]
    inputs = make_inputs(tiny_cfg(), frames=2)
    inputs["image_tokens"] = None
    with torch.no_grad():
        out = model(**inputs)
    assert out.token_weights is None


def test_missing_condition_raises(model, cfg):
    inputs = make_inputs(cfg, frames=2)
    for name in ("reference_latents", "intensity", "image_tokens"):
        with pytest.raises(ValueError, match=name):
            model(**{**inputs, name: None})


def test_trainable_state_dict_round_trip(cfg):
    a = build.build_network(cfg)
    state = a.trainable_state_dict()
    assert state and all(a.group_of(k) for k in state)
    assert not any(k.startswith("unet.down_blocks.0.resnets") for k in state)
    with torch.no_grad():
        for v in state.values():
            v.add_(0.5) if v.is_floating_point() else None
    b = build.build_network(cfg)
    b.load_trainable_state_dict(state)
    for k, v in b.trainable_state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="state_dict"):
        b.load_trainable_state_dict({k: v for k, v in list(state.items())[1:]})


def perturbed(model: LivePhotoModel) -> LivePhotoModel:
    """Move every weight off its seeded initial value, as training would."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(123)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model


def saved_and_loaded(model: LivePhotoModel, directory) -> LivePhotoModel:
    """``model`` through ``LivePhotoPipeline.save_pretrained`` and ``from_pretrained``."""
    from model.pipeline import LivePhotoPipeline

    LivePhotoPipeline(unet=model.unet, livephoto_adapter=model.adapter, model_config=to_dict(model.cfg)).save_pretrained(directory)
    return LivePhotoPipeline.from_pretrained(directory).model.eval()


def test_save_pretrained_round_trip(tmp_path, cfg):
    """The network saves as diffusers components (base UNet, MotionAdapter, LivePhotoAdapter) and
    loads back to the same outputs; each component folder loads with its own class alone."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    from model.adapter import LivePhotoAdapter

    model = perturbed(build.build_network(cfg)).eval()
    loaded = saved_and_loaded(model, tmp_path)
    assert loaded.cfg == cfg
    inputs = make_inputs(cfg)
    with torch.no_grad():
        a, b = model(**inputs), loaded(**inputs)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.token_weights, b.token_weights)
    state = model.state_dict()
    adapter = LivePhotoAdapter.from_pretrained(tmp_path / "livephoto_adapter")
    assert adapter.config.in_channels == input_channels(cfg) and adapter.config.cross_attentions
    assert torch.equal(adapter.conv_in.weight, state["unet.conv_in.weight"])
    assert torch.equal(adapter.reweight.head.weight, state["reweight.head.weight"])
    first = adapter.config.cross_attentions[0]
    assert torch.equal(adapter.content_attn[0].out_ip.weight, state[f"unet.{first}.processor.out_ip.weight"])
    motion = MotionAdapter.from_pretrained(tmp_path / "motion_adapter").state_dict()
    assert motion and all(torch.equal(v, state[f"unet.{k}"]) for k, v in motion.items())
    unet2d = UNet2DConditionModel.from_pretrained(tmp_path / "unet")  # a from-scratch base is saved; a pretrained one is not
    assert unet2d.config.in_channels == 4 and torch.equal(unet2d.conv_out.weight, state["unet.conv_out.weight"])


def test_an_adapter_that_does_not_fit_is_refused(cfg):
    model = build.build_network(cfg)
    other = build.build_network(tiny_cfg(use_intensity=False))
    with pytest.raises(ValueError, match="livephoto_adapter: does not fit this model: conv_in takes 9 channels"):
        LivePhotoModel(cfg, build.build_base_unet(cfg), adapter=other.adapter)
    assert model.adapter.conv_in is model.unet.conv_in  # installed, not copied


def test_weights_not_found_names_component_and_path(tmp_path):
    from model.pipeline import LivePhotoPipeline

    missing = tmp_path / "no-such-model"
    c = tiny_cfg(base_model=str(missing), local_files_only=True)
    with pytest.raises(WeightsNotFoundError) as info:
        build.build_unet2d(c)
    text = str(info.value)
    assert "SD 1.5 UNet" in text and str(missing) in text and "--model.base_model" in text
    with pytest.raises(WeightsNotFoundError, match="AnimateDiff motion adapter"):
        build.build_motion_adapter(tiny_cfg(motion_adapter=str(missing), local_files_only=True), None)
    missing.mkdir()
    with pytest.raises(ConfigError, match="not a LivePhoto save_pretrained folder.*model_index.json"):
        LivePhotoPipeline.from_pretrained(missing)


def test_seeded_build_is_reproducible(cfg):
    a, b = build.build_network(cfg), build.build_network(cfg)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    other = build.build_network(tiny_cfg(seed=1)).state_dict()
    assert not torch.equal(sa["reweight.head.weight"], other["reweight.head.weight"])


def test_base_group_trains_the_sd_blocks_and_round_trips():
    """'base' (tiny preset only) makes the SD blocks trainable, and their weights join the trainable state."""
    from model.build import build_network
    from model.config import ModelConfig, model_preset

    model = build_network(ModelConfig(**model_preset("tiny")))
    default_keys = set(model.trainable_state_dict())
    model.set_trainable(["motion", "base"])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "unet.conv_out.weight" in names and not any(n.startswith("reweight.") for n in names)
    state = model.trainable_state_dict()
    assert default_keys < set(state) and "unet.conv_out.weight" in state
    other = build_network(ModelConfig(**model_preset("tiny"), seed=1))
    other.load_trainable_state_dict(state)
    assert torch.equal(other.state_dict()["unet.conv_out.weight"], state["unet.conv_out.weight"])
    with pytest.raises(ValueError, match="trainable: unknown group\\(s\\) everything"):
        model.set_trainable(["everything"])


# --------------------------------------------------------------------------- reference skip (cfg.reference_skip)


def skip_cfg(**overrides) -> ModelConfig:
    return tiny_cfg(reference_skip=True, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                    timestep_spacing="trailing", **overrides)


def test_reference_skip_makes_the_photo_the_free_answer():
    """With the UNet's output at zero, the clean estimate from pure noise (t = T-1, zero terminal
    SNR) is the reference in every frame; without the skip it is zero, not the photo."""
    estimates = {}
    for skip in (True, False):
        cfg = skip_cfg() if skip else dataclasses.replace(skip_cfg(), reference_skip=False)
        model = build.build_network(cfg)
        with torch.no_grad():
            model.unet.conv_out.weight.zero_()
            model.unet.conv_out.bias.zero_()
        inputs = make_inputs(cfg)
        t = build.build_scheduler(cfg).config.num_train_timesteps - 1
        inputs["timestep"] = torch.tensor([t, t])
        with torch.no_grad():
            v = model(**inputs).sample
        alpha_bar = build.build_scheduler(cfg).alphas_cumprod[t]
        assert alpha_bar == 0  # zero terminal SNR: x_T is pure noise
        estimates[skip] = alpha_bar.sqrt() * inputs["sample"] - (1 - alpha_bar).sqrt() * v  # x0 from v
        reference = inputs["reference_latents"][:, :, None].expand_as(v)
    torch.testing.assert_close(estimates[True], reference)
    assert estimates[False].abs().max() == 0


def test_reference_skip_is_the_residual_reparametrisation():
    """The skip network at x_t equals the same UNet fed the noised residual x_t - a*ref, plus the
    reference's share of the target (-s*ref for v): checked against a network without the skip
    holding the same weights, at two timesteps of the schedule."""
    cfg = skip_cfg()
    model = perturbed(build.build_network(cfg)).eval()
    plain = build.build_network(dataclasses.replace(cfg, reference_skip=False)).eval()
    plain.load_state_dict(model.state_dict())
    inputs = make_inputs(cfg)
    ab = build.build_scheduler(cfg).alphas_cumprod[inputs["timestep"]].view(-1, 1, 1, 1, 1)
    ref = inputs["reference_latents"][:, :, None].expand_as(inputs["sample"])
    with torch.no_grad():
        got = model(**inputs).sample
        want = plain(**{**inputs, "sample": inputs["sample"] - ab.sqrt() * ref}).sample - (1 - ab).sqrt() * ref
    torch.testing.assert_close(got, want)
    assert "alphas_cumprod" not in model.state_dict()  # the schedule comes from the config, not the weights


def test_reference_skip_round_trips_and_needs_the_reference(tmp_path):
    model = perturbed(build.build_network(skip_cfg())).eval()
    loaded = saved_and_loaded(model, tmp_path)
    assert loaded.cfg.reference_skip
    inputs = make_inputs(loaded.cfg)
    with torch.no_grad():
        assert torch.equal(model(**inputs).sample, loaded(**inputs).sample)
    with pytest.raises(ValueError, match="reference_skip: needs use_reference_latent"):
        skip_cfg(use_reference_latent=False)
