"""Hugging Face integration of the semsim models: safetensors save/load round trips for every pool and potential,
the Auto classes, init scales through transformers' loading path, and bad config values."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from semsim.baselines import MatchedGPTConfig, MatchedGPTForCausalLM
from semsim.causal import causal_probe
from semsim.splm import SPLMConfig, SPLMForCausalLM

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)

BASE = dict(vocab_size=50, d=8, max_len=24, L=2, v_hidden=16, v_depth=2)
VARIANTS = {
    'vanilla': dict(),
    'ema_sq3_logfreq_ln': dict(xi_pool='ema', xi_channels=3, xi_fixed=False, potential='sq3', K_mix=3, mass_mode='logfreq',
                               ln_after_step=True, fixed_gamma=0.3),
    'hippo_learnable_dt_sq2': dict(xi_pool='hippo_legt', xi_channels=2, xi_learnable_dt=True, xi_fixed=False, potential='sq2', sq_rank=2),
    's4d_sq4_verlet': dict(xi_pool='s4d', xi_channels=2, xi_fixed=False, potential='sq4', integrator='verlet'),
    'cummean_sq1_embed_head_first_order': dict(xi_fixed=False, potential='sq1', mass_mode='embed_head', integrator='first_order'),
}


def _perturb(model, seed=0):
    "Move every parameter and floating buffer away from its initial value, so a reload cannot pass by re-initialising."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.add_(0.05 * torch.randn(t.shape, generator=g, dtype=t.dtype))
    return model


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_splm_save_load_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = _perturb(SPLMForCausalLM(SPLMConfig(**BASE, **VARIANTS[name]))).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path/'model.safetensors').exists()
    cfg_json = json.loads((tmp_path/'config.json').read_text())
    assert cfg_json['model_type'] == 'semsim-splm'
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is SPLMForCausalLM
    strip = lambda c: {k: v for k, v in c.to_dict().items() if not k.startswith('_') and k not in ('name_or_path', 'transformers_version')}
    assert strip(loaded.config) == strip(model.config)
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert sd0.keys() == sd1.keys()
    for k in sd0: torch.testing.assert_close(sd1[k], sd0[k], atol=0, rtol=0, msg=k)
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad(): torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_splm_config_json_round_trip_keeps_tuples(tmp_path):
    cfg = SPLMConfig(**BASE, xi_pool='ema', xi_channels=2, xi_alpha_inits=(0.2, 0.9), xi_fixed=False)
    cfg.save_pretrained(tmp_path)
    back = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(back, SPLMConfig) and back.xi_alpha_inits == (0.2, 0.9)
    assert AutoConfig.for_model('semsim-splm', **BASE).d == 8
    assert isinstance(AutoConfig.for_model('semsim-matched-gpt'), MatchedGPTConfig)


def test_causal_force_override_on_load(tmp_path):
    torch.manual_seed(1)
    model = SPLMForCausalLM(SPLMConfig(**BASE, xi_fixed=False, potential='sq1'))
    model.save_pretrained(tmp_path)
    leaky = AutoModelForCausalLM.from_pretrained(tmp_path, causal_force=False)
    assert leaky.config.causal_force is False
    assert not causal_probe(leaky, T=16, t_pert=10).passed
    assert causal_probe(AutoModelForCausalLM.from_pretrained(tmp_path), T=16, t_pert=10).passed


def test_float64_round_trip(tmp_path):
    torch.manual_seed(2)
    model = _perturb(SPLMForCausalLM(SPLMConfig(**BASE, xi_pool='ema', xi_channels=2, xi_fixed=False))).double().eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    assert loaded.E.weight.dtype == torch.float64
    ids = torch.randint(0, 50, (1, 12))
    with torch.no_grad(): torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_missing_weights_get_reference_init(tmp_path):
    "A checkpoint without P and V_theta's last layer: transformers initialises them through _init_weights."
    torch.manual_seed(3)
    cfg = SPLMConfig(vocab_size=500, d=64, max_len=400, L=1, v_hidden=256, v_depth=2)
    model = _perturb(SPLMForCausalLM(cfg))
    model.save_pretrained(tmp_path)
    sd = load_file(tmp_path/'model.safetensors')
    for k in ('P', 'V_theta.net.4.weight'): del sd[k]
    save_file(sd, tmp_path/'model.safetensors', metadata={'format': 'pt'})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert abs(loaded.P.std().item() - 0.01) < 1e-3
    assert abs(loaded.V_theta.net[4].weight.std().item() - 0.002) < 5e-4
    # the weights that were in the file are the saved ones, not re-initialised
    torch.testing.assert_close(loaded.V_theta.net[0].weight, model.V_theta.net[0].weight, atol=0, rtol=0)
    torch.testing.assert_close(loaded.E.weight, model.E.weight, atol=0, rtol=0)


def test_init_scales_from_config():
    torch.manual_seed(4)
    m = AutoModelForCausalLM.from_config(SPLMConfig(vocab_size=4000, d=64, max_len=600, L=1, potential='sq3', K_mix=4,
                                                    xi_pool='ema', xi_channels=2, xi_fixed=False))
    assert abs(m.E.weight.std().item() - 0.02) < 1e-3
    assert abs(m.P.std().item() - 0.01) < 5e-4
    assert abs(m.V_theta.mu_proj.weight.std().item() - 0.02) < 2e-3
    g = AutoModelForCausalLM.from_config(MatchedGPTConfig(vocab_size=4000, d=64, max_len=600, n_layer=1))
    assert abs(g.P.std().item() - 0.02) < 1e-3 and abs(g.blocks[0].attn.qkv.weight.std().item() - 0.02) < 1e-3


def test_matched_gpt_round_trip(tmp_path):
    torch.manual_seed(5)
    model = _perturb(MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=50, d=16, max_len=24, n_layer=2, n_head=2))).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is MatchedGPTForCausalLM
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad(): torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    out = loaded.generate(ids[:, :3], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 7)


def test_generate_after_load(tmp_path):
    torch.manual_seed(6)
    model = SPLMForCausalLM(SPLMConfig(**BASE, xi_pool='ema', xi_channels=2, xi_fixed=False)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = torch.randint(0, 50, (2, 3))
    a = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    b = loaded.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b) and a.shape == (2, 8)


@pytest.mark.parametrize('kw, msg', [
    (dict(xi_pool='fourier'), 'xi_pool must be one of'),
    (dict(potential='gaussian'), 'potential must be one of'),
    (dict(mass_mode='attention'), 'mass_mode must be one of'),
    (dict(integrator='rk4'), 'integrator must be one of'),
    (dict(lambda_v_points='final'), 'lambda_v_points must be one of'),
    (dict(d=0), 'd must be a positive integer'),
    (dict(L=2.5), 'L must be a positive integer'),
    (dict(vocab_size=True), 'vocab_size must be a positive integer'),
    (dict(dt=-1.0), 'dt must be a finite number > 0'),
    (dict(dt=math.inf), 'dt must be a finite number > 0'),
    (dict(tau=0.0), 'tau must be a finite number > 0'),
    (dict(init_m=0.0), 'init_m must be a finite number > 0'),
    (dict(init_gamma=-0.1), 'fixed_gamma=0.0'),
    (dict(fixed_gamma=-0.3), 'fixed_gamma must be None'),
    (dict(lambda_v=-1e-3), 'lambda_v must be >= 0'),
    (dict(xi_channels=2), 'exactly one channel'),
    (dict(xi_pool='ema', xi_channels=2, xi_alpha_inits=(0.5,)), 'xi_alpha_inits has 1 values'),
    (dict(xi_pool='ema', xi_channels=2, xi_alpha_inits=(0.5, 1.5)), 'must lie in [0, 1]'),
    (dict(xi_pool='ema', xi_channels=2, xi_tau_max=0.5), 'xi_tau_max must be > 1'),
    (dict(xi_s4d_init='random'), 'xi_s4d_init must be one of'),
    (dict(xi_alpha_dtype='float16'), 'xi_alpha_dtype must be one of'),
    (dict(causal_force='yes'), 'causal_force must be a bool'),
    (dict(tie_word_embeddings=False), 'tie_word_embeddings must be True'),
])
def test_bad_splm_config(kw, msg):
    with pytest.raises(ValueError, match=__import__('re').escape(msg)): SPLMConfig(**kw)


@pytest.mark.parametrize('kw, msg', [
    (dict(d=30, n_head=4), 'divisible by n_head'),
    (dict(n_head=0), 'n_head must be a positive integer'),
    (dict(max_len=-1), 'max_len must be a positive integer'),
    (dict(dropout=1.0), 'dropout must be in [0, 1)'),
    (dict(init_std=0.0), 'init_std must be > 0'),
])
def test_bad_matched_gpt_config(kw, msg):
    with pytest.raises(ValueError, match=__import__('re').escape(msg)): MatchedGPTConfig(**kw)


def test_bad_value_in_saved_config_is_refused(tmp_path):
    SPLMForCausalLM(SPLMConfig(**BASE)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path/'config.json').read_text())
    cfg['integrator'] = 'leapfrog'
    (tmp_path/'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='integrator must be one of'): AutoModelForCausalLM.from_pretrained(tmp_path)


def test_config_changed_after_construction_is_checked():
    cfg = SPLMConfig(**BASE)
    cfg.potential = 'quartic'
    with pytest.raises(ValueError, match='potential must be one of'): SPLMForCausalLM(cfg)


def test_presets():
    for name in SPLMConfig.PRESETS: assert isinstance(SPLMConfig.preset(name), SPLMConfig)
    assert SPLMConfig.preset('multixi', L=4).L == 4
    with pytest.raises(ValueError, match='unknown SPLM preset'): SPLMConfig.preset('transformer')
    assert MatchedGPTConfig.preset('tinystories').max_len == 1024
