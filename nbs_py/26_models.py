# %% [markdown]
# # Model registry
#
# > Every member of the semsim model family by name — the names `semsim train --model` takes — buildable anywhere with `build_model(name, **config_overrides)`.

# %%
#| default_exp models

# %% [markdown]
# The family is large: ten named SPLM configurations (chapter *SPLM*, `SPLMConfig.PRESETS`) and the matched attention
# baseline. `MODELS` maps each name to a `ModelSpec`: its config class and the fields that make it this member, how
# to build it (the SPLMs with a logfreq mass take the surprisal table of the training corpus when one is given), how
# the shared size names (`SHARED_SIZES`: `d`, `L`, `v_hidden`, `v_depth`, `max_len`, `n_head`, the reference's
# names) map onto its config fields (MatchedGPT's `L` is its `n_layer`; a size a member has no use for is dropped, so
# one set of sizes builds matched members of both families),
# whether its force is an `autograd.grad` inside the forward (then evaluation needs gradients enabled and
# `torch.compile` is not used), and which scalars the training log records. The registry is a plain dict: a new
# family member is one more entry. `build_model` is the way in for analysis code, tests and notebooks; the trainer
# (`semsim.train`) uses the same entries.

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
from fastcore.test import test_eq, test_fail
import torch
torch.set_num_threads(1)

# %%
#| export
from __future__ import annotations
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.baselines import MatchedGPTConfig, MatchedGPTForCausalLM
from semsim.parf import PARFConfig, PARFForCausalLM
from semsim.fock import FockConfig, FockForCausalLM
from semsim.hybrid import HybridConfig, HybridForCausalLM

# %%
#| export
SHARED_SIZES = ('d', 'L', 'v_hidden', 'v_depth', 'max_len', 'n_head')  # size names every member understands (or ignores)

@dataclass
class ModelSpec:
    "One member of the model family: its config, how to build it, and what the trainer needs to know about it."
    help: str                 # one line for --list
    config_cls: type          # the family's config class (a transformers PretrainedConfig)
    preset: dict              # the config fields that make this member (over the class defaults)
    build: Callable           # (config, data with a `surprisal` table or None) -> model
    renames: dict = field(default_factory=dict)  # shared size name -> this config's field name, e.g. {'L': 'n_layer'}
    unused: tuple = ()        # shared sizes this member has no use for (dropped), e.g. MatchedGPT's v_hidden
    autograd_force: Callable = lambda model: False  # (model) -> True when the force is autograd.grad inside forward
    stats: Callable = lambda model, x: {}            # (model, x) -> scalars for the log (γ, mass, ξ decays)
    on_step: Callable = lambda model, frac: None      # (model, fraction of training done) -> None, before each step (schedules, e.g. PARF's τ)
    def config_kwargs(self, args:dict) -> dict: # shared sizes and config fields, e.g. {'d': 64, 'L': 4, 'xi_channels': 2}
        "This member's config fields: its preset, then `args` with shared size names translated to its own."
        return {**self.preset, **{self.renames.get(k, k): v for k, v in args.items() if k not in self.unused}}


# %%
#| export
def _splm_build(conf:SPLMConfig, data=None) -> SPLMForCausalLM:
    model = SPLMForCausalLM(conf)
    if conf.mass_mode == 'logfreq' and data is not None: model.set_logfreq_surprisal(data.surprisal)
    return model

@torch.no_grad()
def _splm_stats(model, x:Tensor) -> dict: # x: input ids, (B,T)
    "γ, statistics of the per-token masses of the batch, and the EMA decays α_k when the pool has them."
    ms = model.mass(x, model.E(x))[..., 0].float()
    r = {'gamma': float(model.gamma()), 'mass_mean': float(ms.mean()), 'mass_std': float(ms.std()) if ms.numel() > 1 else 0.0,
         'mass_min': float(ms.min()), 'mass_max': float(ms.max())}
    a = getattr(model.xi_module, 'alpha', None)
    if isinstance(a, Tensor): r['xi_alpha'] = [round(float(v), 6) for v in a]
    return r

def _splm_spec(preset:str, help:str) -> ModelSpec:
    return ModelSpec(help, SPLMConfig, dict(SPLMConfig.PRESETS[preset]), _splm_build, unused=('n_head',),
                     autograd_force=lambda model: not model.V_theta.closed_form, stats=_splm_stats)

def _parf_build(conf:PARFConfig, data=None) -> PARFForCausalLM:
    model = (FockForCausalLM if isinstance(conf, FockConfig) else PARFForCausalLM)(conf)
    if conf.mass_mode == 'logfreq' and data is not None: model.set_logfreq_surprisal(data.surprisal)
    return model

def _parf_stats(model, x:Tensor) -> dict:
    r = _splm_stats(model, x)
    if hasattr(model, 'route_tau'): r['route_tau'] = float(model.route_tau)
    return r

def _parf_spec(preset:str, help:str, conf_cls=PARFConfig) -> ModelSpec:
    return ModelSpec(help, conf_cls, dict(conf_cls.PRESETS[preset]), _parf_build, unused=('n_head',),
                     autograd_force=lambda model: True, stats=_parf_stats,
                     on_step=lambda model, frac: model.set_training_progress(frac))

def _hybrid_build(conf:HybridConfig, data=None) -> HybridForCausalLM:
    model = HybridForCausalLM(conf)
    if conf.mass_mode == 'logfreq' and data is not None: model.set_logfreq_surprisal(data.surprisal)
    return model

def _hybrid_spec(preset:str, help:str, **fields) -> ModelSpec:
    "A hybrid: its depth is its schedule, so the shared size L is not used (set `schedule` or `n_attn`/`n_splm`)."
    return ModelSpec(help, HybridConfig, {**HybridConfig.PRESETS[preset], **fields}, _hybrid_build, unused=('L',),
                     autograd_force=lambda model: not model.V_theta.closed_form, stats=_splm_stats)


# %%
#| export
MODELS = {
    'splm-em-ln': _splm_spec('em_ln', 'SPLM em_ln: SARF ξ, logfreq mass, LayerNorm after each step, free γ'),
    'splm-multixi': _splm_spec('multixi', 'multi-ξ SPLM: 4-channel EMA ξ, em_ln, γ 0.30 fixed'),
    'splm-sq3': _splm_spec('sq3_multixi', 'multi-ξ SPLM with the SQ3 mixture potential, K_mix 8, λ_V 0.01'),
    'splm-vanilla': _splm_spec('vanilla', 'vanilla SPLM: cumulative-mean ξ fixed from h_0, global mass'),
    'splm-sarf-logfreq': _splm_spec('sarf_logfreq', 'SARF-faithful SPLM with logfreq mass, no LN'),
    'splm-em-sg': _splm_spec('em_sg', 'SPLM em_sg: input-state scale gauge λ_V0 = 1e-3'),
    'splm-em-gm': _splm_spec('em_gm', 'SPLM em_gm: V_θ the K = 64 Gaussian-mixture head (κ 0.25, A 1)'),
    'splm-first-order': _splm_spec('first_order', 'first-order ablation SPLM-1'),
    'splm-verlet': _splm_spec('verlet', 'velocity-Verlet SPLM'),
    'splm-multixi-hippo': _splm_spec('multixi_hippo', 'multi-ξ SPLM, HiPPO-LegT pool θ = 200'),
    'splm-multixi-s4d': _splm_spec('multixi_s4d', 'multi-ξ SPLM, S4D pool'),
    'parf-q9c': _parf_spec('q9c', 'PARF-augmented SPLM (Q9c): em_ln plus the structural pair potential V_φ over every s < t'),
    'parf-sparse': _parf_spec('parf_sparse', 'SparsePARFLM: Q9c with straight-through Gumbel top-k routing, k = 4'),
    'parflm-multixi': _parf_spec('parflm_multixi', 'multi-ξ PARFLM: 8 log-spaced EMA channels, V_φ hidden 128, top-k 8, γ 0.30'),
    'fock-parflm': _parf_spec('fock_parflm', 'Fock-PARFLM: SparsePARFLM k = 4 with 16 prefix-causal registers', FockConfig),
    'hybrid-a': _hybrid_spec('hybrid_a', 'Variant A hybrid: k = 4 attention blocks, boundary LN, m = 4 steps of one shared V_θ (n_attn, n_splm)'),
    'helmholtz-q9d': _hybrid_spec('helmholtz_q9d', 'Helmholtz hybrid Q9d: schedule over {A, S} (default AAAASSSS; SASASASA is Variant B), δ carried through both'),
    'matched-gpt': ModelSpec('MatchedGPT: the pre-LN GPT-2 attention baseline', MatchedGPTConfig, {},
                             lambda conf, data=None: MatchedGPTForCausalLM(conf),
                             renames={'L': 'n_layer'}, unused=('v_hidden', 'v_depth')),
}

def model_spec(name:str) -> ModelSpec:
    "The registry entry of `name`, or an error listing the known names."
    if name not in MODELS: raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]

def model_fields(name:str) -> dict:
    "Config fields of a model family with their default values (what `--set` may target beyond TrainConfig)."
    spec = model_spec(name); own = {k: v for k, v in spec.config_cls().to_dict().items() if not k.startswith('_')}
    return {**own, **{k: own.get(spec.renames.get(k, k)) for k in SHARED_SIZES}}

def build_model(name:str, # a key of MODELS, e.g. 'splm-multixi'
                data=None, # something with a `surprisal` table (V,) for logfreq masses, e.g. semsim.train.RunData
                **config_overrides): # any field of the member's config or shared size, e.g. d=64, L=4, vocab_size=500
    "A freshly initialised model of the named family member, its config overridden field by field."
    spec = model_spec(name)
    return spec.build(spec.config_cls(**spec.config_kwargs(config_overrides)), data)


# %% [markdown]
# Every name builds (here on the meta device, at the members' full sizes, to read their parameter counts without
# allocating), a tiny one runs, overrides reach the config, and a bad name or field is an error that names it:

# %%
with torch.device('meta'):
    sizes = {name: sum(p.numel() for p in build_model(name).parameters()) for name in MODELS}
for name, n in sizes.items(): print(f"{name:20s} {n:>12,} parameters   {MODELS[name].help}")
m = build_model('splm-multixi', vocab_size=50, d=16, L=2, v_hidden=32, max_len=32)
test_eq(type(m).__name__, 'SPLMForCausalLM'); test_eq((m.config.xi_pool, m.config.xi_channels, m.config.d), ('ema', 4, 16))
test_eq(m(torch.randint(0, 50, (1, 8))).logits.shape, (1, 8, 50))
g = build_model('matched-gpt', vocab_size=50, d=16, n_layer=2, n_head=2, max_len=32)
test_eq(type(g).__name__, 'MatchedGPTForCausalLM')
g2 = build_model('matched-gpt', vocab_size=50, d=16, L=3, n_head=2, v_hidden=64, max_len=32)  # shared sizes: L is n_layer
test_eq((g2.config.n_layer, hasattr(g2.config, 'v_hidden')), (3, False))
class _Data: surprisal = torch.linspace(1, 9, 50)
test_eq(build_model('splm-em-ln', _Data(), vocab_size=50, d=16, L=2, v_hidden=32).logfreq_surprisal, _Data.surprisal)
test_fail(lambda: build_model('gpt5'), contains="unknown model 'gpt5'; known models: splm-em-ln")
test_fail(lambda: build_model('splm-vanilla', d=0), contains='d must be a positive integer')
test_eq('xi_channels' in model_fields('splm-multixi') and 'n_head' in model_fields('matched-gpt'), True)
