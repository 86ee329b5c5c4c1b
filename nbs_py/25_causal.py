# %% [markdown]
# # Causal probe
#
# > Two tests that no prediction sees a later token — a perturbation test and a train-mode gradient-Jacobian test — that pass every semsim model built normally and flag every one built with the historical leak.

# %%
#| default_exp causal

# %% [markdown]
# A language model is **causal** when the logits at position $t$ are a function of tokens $x_{\le t}$ only. Attention
# models get this from a mask; the SPLM gets it from building its context ξ from *detached* hidden states (see
# `semsim.splm`). The reference's SPLMs lost it through autograd (semsimula-paper@eb95852: `companion_notes/Causal_Leak_in_SPLM_Integrate_Bug_and_Fix.md`): the force
# $-\partial_{h_t}\sum_s V(\xi_s(h), h_s)$ picks up $\partial V_s/\partial\xi_s \cdot \partial\xi_s/\partial h_t$ from every
# later $s$, and trained models learned to read the future through it. `causal_probe` implements the reference's two
# probes (§6.1) for any semsim model:
#
# 1. **Perturbation test** (evaluation mode, gradients enabled since forces need them). Draw $x_a$ uniformly from the
#    vocabulary with `seed`, let $x_b = x_a$ except $x_b[t_p] = (x_a[t_p] + 17) \bmod V$ at `t_pert` $= t_p$, and measure
#    $$\Delta_\text{pre} = \max_{t < t_p}\max_v |z_a[t,v] - z_b[t,v]|$$
#    (and, for information, $\Delta_\text{post}$ over $t \ge t_p$, which must be large). Pass: $\Delta_\text{pre} < 10^{-6}$.
# 2. **Gradient-Jacobian test** (strictly stronger: **training mode**, so the second-order graph that training
#    differentiates through is present). Take the token embeddings $e = E[x_a]$ as a fresh leaf, run the model on them
#    and compute $g = \partial\big(\sum_v z[t_\ast, v]\big)/\partial e$ at $t_\ast$ = `t_target` (default `t_pert`).
#    $$\Delta_\text{grad} = \max_{t' > t_\ast} \|g[t']\|_2 .$$
#    Pass: $\Delta_\text{grad} < 10^{-6}$; as a sanity check $g[t'] \ne 0$ for some $t' \le t_\ast$ (otherwise the probe
#    could not see anything).
#
# The model passes when both pass. By default the probe runs on a **float64 copy** of the model on the CPU: round-off
# (about $10^{-7}$ relative in float32, e.g. through FFT convolutions) then cannot masquerade as a leak, the reference's
# MPS limitation (no second-order autograd) does not arise, and the caller's model is left untouched.
#
# **A relative criterion as well.** The absolute threshold depends on the scale of the weights. A freshly initialised
# MLP potential (last layer std 0.002) leaks only $\sim 10^{-8}$ in absolute terms — below $10^{-6}$, which is how the
# reference's leak went unnoticed (it was "measured only on a freshly initialised model", semsimula-paper@eb95852: `companion_notes/Causal_Leak_Empirical_Comparison_Report.md`) — while
# training grows the same term to $10^{-1}$. In float64 a causal model's anti-causal terms are exactly zero or round-off
# ($\lesssim 10^{-15}$ relative), so the probe also requires the *relative* leaks $\Delta_\text{pre}/\Delta_\text{post}$
# and $\Delta_\text{grad}/\max_{t'\le t_\ast}\|g[t']\|$ to stay below `rel_tol` $= 10^{-9}$: six orders above
# round-off, and a leak of any weight scale is caught. (In a float32 run only the absolute thresholds apply.)

# %%
#| hide
import warnings; warnings.filterwarnings('ignore', message='IProgress not found')
import torch
from fastcore.test import test_eq, test_fail, test_close
import itertools, math, time
import matplotlib.pyplot as plt
import transformers
transformers.utils.logging.disable_progress_bar(); transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)  # tiny tensors: threads only add overhead

# %%
#| export
from __future__ import annotations
import copy, itertools, math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.parf import PARFConfig, PARFForCausalLM   # probe_grid: cells with `routing` are PARF models
from semsim.fock import FockConfig, FockForCausalLM   # probe_grid: cells with `n_registers` are Fock models
from semsim.hybrid import HybridConfig, HybridForCausalLM   # probe_grid: cells with `schedule` or `kind` are hybrids

# %% [markdown]
# ## The report

# %%
#| export
CAUSAL_TOL = 1e-6      # absolute pass threshold of both probes (semsimula-paper@eb95852: `notebooks/conservative_arch/causal_probe.py`, class smoke test)
CAUSAL_REL_TOL = 1e-9  # relative pass threshold, applied when the probe runs in float64

@dataclass
class CausalReport:
    "Result of `causal_probe`: both deltas, the sanity gradient and the verdicts."
    model: str            # class name of the probed model
    T: int                # sequence length
    t_pert: int           # perturbed position
    t_target: int         # position whose logits are differentiated
    seed: int             # seed of the random tokens
    dtype: str            # dtype the probe ran in
    delta_pre: float      # max |Δlogits| before t_pert
    delta_post: float     # max |Δlogits| from t_pert on (large for any model that uses its input)
    grad_delta: float     # max_{t' > t_target} ‖∂Σ_v logits[t_target] / ∂e[t']‖
    grad_self: float      # max_{t' ≤ t_target} of the same norm (sanity: must be > 0)
    tol: float = CAUSAL_TOL               # absolute threshold
    rel_tol: Optional[float] = CAUSAL_REL_TOL  # relative threshold (None: absolute only)
    @property
    def rel_pre(self) -> float: # Δ_pre / Δ_post
        return self.delta_pre / self.delta_post if self.delta_post > 0 else (0.0 if self.delta_pre == 0 else math.inf)
    @property
    def rel_grad(self) -> float: # Δ_grad / |g_self|
        return self.grad_delta / self.grad_self if self.grad_self > 0 else (0.0 if self.grad_delta == 0 else math.inf)
    @property
    def perturbation_passed(self) -> bool:
        return self.delta_pre < self.tol and (self.rel_tol is None or self.rel_pre < self.rel_tol)
    @property
    def gradient_passed(self) -> bool:
        return self.grad_delta < self.tol and self.grad_self > 0 and (self.rel_tol is None or self.rel_grad < self.rel_tol)
    @property
    def passed(self) -> bool: return self.perturbation_passed and self.gradient_passed
    def __repr__(self):
        v = 'PASSED' if self.passed else 'FLAGGED'
        return (f"CausalReport({self.model}, {v}: Δ_pre={self.delta_pre:.2e} [{'ok' if self.perturbation_passed else 'LEAK'}], "
                f"Δ_grad={self.grad_delta:.2e} [{'ok' if self.gradient_passed else 'LEAK'}], Δ_post={self.delta_post:.2e}, "
                f"|g_self|={self.grad_self:.2e}, relative {self.rel_pre:.1e} / {self.rel_grad:.1e}, T={self.T}, "
                f"t_pert={self.t_pert}, {self.dtype}, tol={self.tol:g}, rel_tol={self.rel_tol})")


# %% [markdown]
# ## The probe
#
# The probe needs only what every semsim language model offers: `config.vocab_size` and `config.max_len`,
# `get_input_embeddings()`, and a forward that accepts `input_ids` together with `inputs_embeds` (the token embeddings
# $E[x]$, which replace the lookup; positions are added inside; the ids remain available for per-token quantities such
# as the logfreq mass).

# %%
#| export
def _probe_copy(model, dtype, device):
    "A detached copy of the model for probing (or the model itself when no conversion is asked)."
    if dtype is None and device is None: return model
    m = copy.deepcopy(model)
    return m.to(device=device or next(model.parameters()).device, dtype=dtype or next(model.parameters()).dtype)

# %%
#| export
def _check_probe_args(model, T, t_pert, t_target) -> int:
    "The model's vocabulary size, after checking the model and the probe positions (a clear error otherwise)."
    cfg = getattr(model, 'config', None)
    if cfg is None or not hasattr(model, 'get_input_embeddings'):
        raise TypeError(f"causal_probe needs a semsim language model with .config and get_input_embeddings(), got {type(model).__name__}")
    V, max_len = cfg.vocab_size, getattr(cfg, 'max_len', None) or cfg.max_position_embeddings
    if not (isinstance(T, int) and 2 <= T <= max_len): raise ValueError(f"T must be an integer in [2, max_len={max_len}], got {T!r}")
    if not (isinstance(t_pert, int) and 1 <= t_pert < T): raise ValueError(f"t_pert must satisfy 1 <= t_pert < T={T}, got {t_pert!r}")
    if not (isinstance(t_target, int) and 0 <= t_target < T - 1): raise ValueError(f"t_target must satisfy 0 <= t_target < T-1={T-1}, got {t_target!r}")
    if V < 18: raise ValueError(f"the perturbation (x + 17) mod V needs a vocabulary of at least 18 tokens, got V={V}")
    return V

# %%
#| export
def causal_probe(model, # a semsim language model (SPLMForCausalLM, MatchedGPTForCausalLM, ...)
                 T:int=32, # sequence length
                 t_pert:int=20, # position of the perturbed token
                 seed:int=0, # seed of the random token ids
                 t_target:Optional[int]=None, # position differentiated in the gradient test (default t_pert)
                 dtype:Optional[torch.dtype]=torch.float64, # run on a copy in this dtype (None: the model as it is)
                 device:Optional[str]='cpu', # run on a copy on this device (None: where the model is)
                 tol:float=CAUSAL_TOL, # absolute threshold on Δ_pre and Δ_grad
                 rel_tol:Optional[float]=CAUSAL_REL_TOL, # threshold on Δ_pre/Δ_post and Δ_grad/|g_self| (float64 runs only)
                ) -> CausalReport:
    "Perturbation and gradient-Jacobian causality probes (semsimula-paper@eb95852: `notebooks/conservative_arch/causal_probe.py`)."
    t_target = t_pert if t_target is None else t_target
    V = _check_probe_args(model, T, t_pert, t_target)
    m = _probe_copy(model, dtype, device)
    was_training, dev = m.training, next(m.parameters()).device
    g = torch.Generator().manual_seed(seed)
    xa = torch.randint(0, V, (1, T), generator=g).to(dev)
    xb = xa.clone(); xb[0, t_pert] = (xa[0, t_pert] + 17) % V
    try:
        m.eval()
        with torch.enable_grad():
            za, zb = m(input_ids=xa).logits.detach(), m(input_ids=xb).logits.detach()
        d_pre = (za[:, :t_pert] - zb[:, :t_pert]).abs().max().item()
        d_post = (za[:, t_pert:] - zb[:, t_pert:]).abs().max().item()
        m.train()
        with torch.enable_grad():
            e = m.get_input_embeddings()(xa).detach().requires_grad_(True)
            z = m(input_ids=xa, inputs_embeds=e).logits
            gr, = torch.autograd.grad(z[0, t_target].sum(), e)
        norms = gr[0].norm(dim=-1)
        g_delta, g_self = norms[t_target + 1:].max().item(), norms[:t_target + 1].max().item()
    finally:
        m.train(was_training)
    run_dtype = next(m.parameters()).dtype
    return CausalReport(type(model).__name__, T, t_pert, t_target, seed, str(run_dtype).replace('torch.', ''),
                        d_pre, d_post, g_delta, g_self, tol, rel_tol if run_dtype == torch.float64 else None)

# %%
#| export
def assert_causal(model, **kw) -> CausalReport:
    "Trainer start-up guard: run `causal_probe` and raise RuntimeError unless it passes."
    r = causal_probe(model, **kw)
    if not r.passed: raise RuntimeError(f"causal probe failed: {r!r}")
    return r

# %% [markdown]
# ## Examples
#
# The attention baseline and a default SPLM pass; the same SPLM with `causal_force=False` is flagged. (The imports of
# the models are here, not above: `semsim.causal` itself depends on no model class.)

# %%
from semsim.baselines import MatchedGPTConfig, MatchedGPTForCausalLM
from semsim.splm import SPLMConfig, SPLMForCausalLM

# %%
torch.manual_seed(0)
gpt = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=61, d=16, n_layer=2, n_head=2, max_len=48))
splm = SPLMForCausalLM(SPLMConfig(vocab_size=61, d=16, max_len=48, L=3, v_hidden=32, v_depth=2, xi_pool='ema',
                                  xi_channels=3, xi_fixed=False))
r_gpt, r_splm = causal_probe(gpt), causal_probe(splm)
splm.config.causal_force = False
r_leak = causal_probe(splm)
splm.config.causal_force = True
for r in (r_gpt, r_splm, r_leak): print(r)
assert r_gpt.passed and r_splm.passed and not r_leak.passed

# %% [markdown]
# The freshly initialised leaky model leaks only $\sim 10^{-7}$ in absolute terms: the reference's absolute threshold
# alone would pass it, the relative criterion does not.

# %%
assert r_leak.grad_delta < CAUSAL_TOL and r_leak.delta_pre < CAUSAL_TOL
assert r_leak.rel_grad > 100 * CAUSAL_REL_TOL
print(f"leaky fresh model: Δ_grad = {r_leak.grad_delta:.1e} absolute, {r_leak.rel_grad:.1e} relative")

# %% [markdown]
# ## Why it matters: a leaky model reads the future
#
# On a stream of **i.i.d. uniform** tokens no causal model can do better than $\ln V$ nats per token: the next token
# is independent of everything it may see. Training a small SPLM (EMA context, SQ1 wells) on such data, the causal
# model stays at $\ln V$; the same model with `causal_force=False` drives its loss far below $\ln V$ — it predicts
# tokens it cannot have seen — while its gradient-Jacobian leak grows by orders of magnitude from its initial value,
# as in the reference (semsimula-paper@eb95852: `companion_notes/Causal_Leak_Empirical_Comparison_Report.md`: training grew it from ~1e-7 at init to ~1e-1). The causal model's stays exactly 0.

# %%
V_IID = 32
hist = {}
for cf in (True, False):
    torch.manual_seed(0)
    m = SPLMForCausalLM(SPLMConfig(vocab_size=V_IID, d=16, max_len=32, L=2, xi_pool='ema', xi_channels=1,
                                   xi_alpha_inits=(0.5,), xi_fixed=False, potential='sq1', fixed_gamma=0.3, causal_force=cf))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    losses, probes = [], []
    for step in range(201):
        if step % 25 == 0: probes.append((step, causal_probe(m, T=24, t_pert=16).grad_delta))
        x = torch.randint(0, V_IID, (8, 24), generator=g)
        loss = m(x, labels=x).loss
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
        losses.append(loss.item())
    hist[cf] = (losses, probes)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
for cf, lab in ((True, 'causal_force=True'), (False, 'causal_force=False (leak)')):
    ax[0].plot(hist[cf][0], label=lab, lw=1)
    st, gd = zip(*hist[cf][1]); ax[1].semilogy(st, [max(v, 1e-18) for v in gd], 'o-', label=lab)
ax[0].axhline(math.log(V_IID), color='k', ls=':', label='ln V'); ax[0].set(xlabel='step', ylabel='training loss', title='i.i.d. uniform tokens'); ax[0].legend(fontsize=8)
ax[1].axhline(CAUSAL_TOL, color='k', ls=':', label='tol 1e-6'); ax[1].set(xlabel='step', ylabel='Δ_grad (1e-18: exactly 0)', title='gradient-Jacobian leak'); ax[1].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %%
tail = {cf: sum(hist[cf][0][-20:]) / 20 for cf in hist}
print(f"mean loss over the last 20 steps: causal {tail[True]:.3f}, leaky {tail[False]:.3f}, ln V = {math.log(V_IID):.3f}")
print(f"leaky Δ_grad: {hist[False][1][0][1]:.1e} at init -> {max(v for _, v in hist[False][1]):.1e} during training")
assert abs(tail[True] - math.log(V_IID)) < 0.05 and tail[False] < math.log(V_IID) - 1.0
assert all(v == 0 for _, v in hist[True][1]) and max(v for _, v in hist[False][1]) > 1e3 * hist[False][1][0][1]


# %% [markdown]
# ## Tests
#
# **The probe passes every option combination built normally and flags every one built with the leak.** A covering
# grid: every context pool (cumulative mean fixed from $h_0$ — the vanilla model, whose historical leak is confined
# to the first step — cumulative mean recomputed, EMA, HiPPO-LegT, S4D) crossed with every potential (MLP, SQ1–SQ4),
# with the mass modes, integrators, LayerNorm and fixed/learned γ cycled through the 25 cells so that each of their
# values appears several times; each cell built with `causal_force=True` and `False`, at the default initialisation.

# %%
#| export
def option_grid(full:bool=False) -> list:
    "SPLM option combinations for causality tests: a covering grid (25 cells) or the full product (900)."
    pools = [dict(xi_pool='cummean', xi_fixed=True), dict(xi_pool='cummean', xi_fixed=False),
             dict(xi_pool='ema', xi_channels=3, xi_fixed=False), dict(xi_pool='hippo_legt', xi_channels=3, xi_fixed=False),
             dict(xi_pool='s4d', xi_channels=2, xi_fixed=False)]
    pots = [dict(potential=p) for p in ('mlp', 'sq1', 'sq2', 'sq3', 'sq4')]
    masses, integs = ('global', 'embed_head', 'logfreq'), ('euler', 'verlet', 'first_order')
    if full:
        return [{**pl, **pt, 'mass_mode': ms, 'integrator': ig, 'ln_after_step': ln, 'fixed_gamma': fg}
                for pl, pt, ms, ig, ln, fg in itertools.product(pools, pots, masses, integs, (False, True), (None, 0.3))]
    return [{**pl, **pt, 'mass_mode': masses[(i + j) % 3], 'integrator': integs[(i + 2 * j) % 3],
             'ln_after_step': bool((i + j) % 2), 'fixed_gamma': 0.3 if (i * 3 + j) % 2 else None}
            for i, pl in enumerate(pools) for j, pt in enumerate(pots)]

def parf_option_grid() -> list:
    "PARF option combinations (every cell has `routing`, which sends probe_grid to PARFForCausalLM): 12 cells."
    pools = [dict(xi_pool='cummean', xi_fixed=False), dict(xi_pool='cummean', xi_fixed=True), dict(xi_pool='ema', xi_channels=3, xi_fixed=False)]
    return [{**pl, 'routing': r, 'vphi_grad': g, 'xi_grad': g, 'mass_mode': 'logfreq' if r == 'sparse' else 'global',
             'ln_after_step': r == 'dense', 'route_k': 2}
            for pl in pools for r in ('dense', 'sparse') for g in ('detach', 'live')]

def fock_option_grid() -> list:
    "Fock-PARFLM cells (`n_registers` sends probe_grid to FockForCausalLM): dense / sparse × detach / live, 4 cells."
    return [{'routing': r, 'vphi_grad': g, 'xi_grad': g, 'mass_mode': 'logfreq', 'ln_after_step': True, 'route_k': 2,
             'n_registers': 3, 'reg_dk': 4, 'destroy_hidden': 8} for r in ('dense', 'sparse') for g in ('detach', 'live')]

def hybrid_option_grid() -> list:
    "Hybrid cells (`kind` sends probe_grid to HybridForCausalLM): Variant A k2m2 and Q9d ASAS / SSAA, each detach and live."
    lay = [dict(kind='two_stage', n_attn=2, n_splm=2), dict(kind='helmholtz', schedule='ASAS'), dict(kind='helmholtz', schedule='SSAA')]
    return [{**l, 'xi_grad': g, 'n_head': 2, 'mass_mode': 'logfreq'} for l in lay for g in ('detach', 'live')]

def probe_grid(grid:list, base:Optional[dict]=None, seed:int=0, **probe_kw) -> list:
    "Probe every combination with causal_force True and False: list of (options, report_causal, report_leaky)."
    base = base or dict(vocab_size=61, d=16, max_len=48, L=3, v_hidden=32, v_depth=2)
    out = []
    for i, kw in enumerate(grid):
        torch.manual_seed(seed + i)
        if 'kind' in kw: m = HybridForCausalLM(HybridConfig(**{k: v for k, v in base.items() if k != 'L'}, **kw))
        elif 'n_registers' in kw: m = FockForCausalLM(FockConfig(**base, d_l=4, d_angle=3, vphi_hidden=8, c_hidden=8, **kw))
        elif 'routing' in kw: m = PARFForCausalLM(PARFConfig(**base, d_l=4, d_angle=3, vphi_hidden=8, c_hidden=8, **kw))
        else: m = SPLMForCausalLM(SPLMConfig(**base, **kw))
        if kw.get('mass_mode') == 'logfreq': m.set_logfreq_surprisal(torch.rand(base['vocab_size']) * 10)
        r_ok = causal_probe(m, **probe_kw)
        m.config.causal_force = False
        out.append((kw, r_ok, causal_probe(m, **probe_kw)))
    return out


# %% [markdown]
# (`option_grid`, `parf_option_grid` and `probe_grid` are exported so that `tests/` and benchmarks can reuse them.)

# %%
t0 = time.time()
res = probe_grid(option_grid())
for kw, ok, bad in res:
    assert ok.passed, (kw, ok)
    assert not bad.passed, (kw, bad)
print(f"{len(res)} cells × 2 probed in {time.time() - t0:.1f}s: all {len(res)} causal models pass, all {len(res)} leaky ones are flagged")
for key, vals in (('xi_pool', ('cummean', 'ema', 'hippo_legt', 's4d')), ('potential', ('mlp', 'sq1', 'sq2', 'sq3', 'sq4')),
                  ('mass_mode', ('global', 'embed_head', 'logfreq')), ('integrator', ('euler', 'verlet', 'first_order')),
                  ('ln_after_step', (False, True)), ('fixed_gamma', (None, 0.3)), ('xi_fixed', (False, True))):
    for v in vals: assert sum(kw[key] == v for kw, _, _ in res) >= 2, (key, v)

# %% [markdown]
# The causal models' deltas are exactly zero (gradient) or round-off (perturbation, through the FFT convolution of
# HiPPO-LegT), and every leaky cell sits more than ten times above the relative threshold — the weakest are the fresh
# MLP potentials, whose absolute leaks are far below the absolute one:

# %%
ok_pre = max(ok.delta_pre for _, ok, _ in res); ok_grad = max(ok.grad_delta for _, ok, _ in res)
bad_rel = min(max(bad.rel_pre, bad.rel_grad) for _, _, bad in res)
print(f"causal: max Δ_pre {ok_pre:.1e}, max Δ_grad {ok_grad:.1e};  leaky: smallest relative leak {bad_rel:.1e} (rel_tol {CAUSAL_REL_TOL:g})")
fig, ax = plt.subplots(figsize=(9, 3.6))
xs = range(len(res))
ax.semilogy(xs, [max(b.rel_grad, 1e-18) for _, _, b in res], 'rv', label='leaky: Δ_grad/|g_self|')
ax.semilogy(xs, [max(b.grad_delta, 1e-18) for _, _, b in res], 'r.', label='leaky: Δ_grad')
ax.semilogy(xs, [max(o.grad_delta, o.delta_pre, 1e-18) for _, o, _ in res], 'g^', label='causal: max(Δ_grad, Δ_pre) (1e-18: 0)')
ax.axhline(CAUSAL_TOL, color='k', ls=':', label='tol'); ax.axhline(CAUSAL_REL_TOL, color='k', ls='--', label='rel_tol')
ax.set(xlabel='grid cell (pool × potential)', ylabel='leak')
ax.legend(fontsize=7, ncol=3, loc='upper center', bbox_to_anchor=(0.5, -0.22)); plt.tight_layout(); plt.show()
assert ok_pre < 1e-12 and ok_grad == 0 and bad_rel > 10 * CAUSAL_REL_TOL

# %% [markdown]
# **The PARF family and the hybrids too** (`semsim.parf`, Fock-PARFLM from `semsim.fock` in `fock_option_grid`, and
# Variant A / Q9d from `semsim.hybrid` in `hybrid_option_grid`): dense and sparse routing, the pair source and ξ
# detached or live, over three pools; the hybrids with attention before, between and after their S-steps. Every causal cell passes and every `causal_force=False` cell — where ξ and the pair sources are
# built from the live state — is flagged:

# %%
res_parf = probe_grid(parf_option_grid() + fock_option_grid() + hybrid_option_grid())
for kw, ok, bad in res_parf:
    assert ok.passed, (kw, ok)
    assert not bad.passed, (kw, bad)
print(f"{len(res_parf)} PARF, Fock and hybrid cells: causal max Δ_pre {max(o.delta_pre for _, o, _ in res_parf):.1e}, "
      f"max Δ_grad {max(o.grad_delta for _, o, _ in res_parf):.1e}; leaky smallest relative leak "
      f"{min(max(b.rel_pre, b.rel_grad) for _, _, b in res_parf):.1e}")
test_eq({kw['routing'] for kw, _, _ in res_parf if 'routing' in kw}, {'dense', 'sparse'})
test_eq(sum('kind' in kw for kw, _, _ in res_parf), 6)

# %% [markdown]
# The full product — 5 pools × 5 potentials × 3 masses × 3 integrators × LN on/off × γ fixed/learned, 900
# combinations, each built both ways — runs in about a minute (`nbdev_test --flags slow`):

# %%
#| slow
t0 = time.time()
res_full = probe_grid(option_grid(full=True))
assert all(ok.passed and not bad.passed for _, ok, bad in res_full)
print(f"{len(res_full)} combinations × 2 probed in {time.time() - t0:.0f}s: all causal pass, all leaky flagged")

# %% [markdown]
# **The probe leaves the model as it was**: a float32 model in training mode comes back in float32, in training mode,
# with identical parameters; `dtype=None` probes the model itself, in float32, where only the absolute thresholds
# apply and a causal model still passes.

# %%
torch.manual_seed(1)
m = SPLMForCausalLM(SPLMConfig(vocab_size=61, d=16, max_len=48, L=2, v_hidden=32, v_depth=2, xi_pool='hippo_legt', xi_channels=3, xi_fixed=False)).train()
before = {k: v.clone() for k, v in m.state_dict().items()}
r = causal_probe(m)
assert m.training and next(m.parameters()).dtype == torch.float32
for k, v in m.state_dict().items(): torch.testing.assert_close(v, before[k], atol=0, rtol=0)
r32 = causal_probe(m, dtype=None, device=None)
test_eq((r.dtype, r32.dtype, r32.rel_tol), ('float64', 'float32', None))
assert r.passed and r32.passed and m.training

# %% [markdown]
# **The start-up guard** raises for a leaky model and returns the report otherwise; **bad arguments** are refused.

# %%
assert assert_causal(m).passed
m.config.causal_force = False
test_fail(lambda: assert_causal(m), contains='causal probe failed')
m.config.causal_force = True
test_fail(lambda: causal_probe(m, T=49), contains='T must be an integer in [2, max_len=48]')
test_fail(lambda: causal_probe(m, T=32, t_pert=32), contains='t_pert must satisfy')
test_fail(lambda: causal_probe(m, T=32, t_target=31), contains='t_target must satisfy')
test_fail(lambda: causal_probe(torch.nn.Linear(2, 2)), contains='needs a semsim language model')
tiny_vocab = SPLMForCausalLM(SPLMConfig(vocab_size=10, d=8, max_len=40, L=1, v_hidden=8, v_depth=1))
test_fail(lambda: causal_probe(tiny_vocab), contains='at least 18 tokens')

# %% [markdown]
# ## The leak audit: what the probe cannot see
#
# The probe perturbs a token and watches earlier logits. It never *moves the target*: a model that reads its whole
# input window (the reference's first Fock register bank did) predicts token $x_j$ at position $j-1$ with $x_j$ itself
# in view, and perturbing $x_j$ changes only logits at and after $j-1$... which the perturbation test does not score.
# `audit` adds that test and the controls that make a verdict trustworthy:
#
# - **future perturbation**: as the probe, in float64, with tolerance 0: Δ_pre must be exactly 0;
# - **target relocation**: the log-probability of $x_j$ scored at position $j-1$ inside a long window, and scored at the
#   last position of the window $x_{0..j-1}$ that ends before it; a causal model gives the same number (a gap of 0
#   nats up to float64 rounding), a model that sees its target scores it better inside;
# - **controls**: *determinism* (two identical forwards agree exactly), *placebo* (a "perturbation" that writes each
#   token back changes nothing) and a *positive control*: the same tests on the model wrapped so that it deliberately
#   adds ε = 1e-3 times the next token's one-hot to its logits must find that leak: every target's relocation gap
#   must rise by ε(1 − p) over the model's own (compared with the model's gaps, not with 0, so that a model that
#   already leaks, however strongly, is still judged LEAK rather than INVALID), and Δ_pre must be non-zero.
#
# The verdict is `'INVALID'` when a control fails (then the other tests prove nothing), else `'LEAK'` when either test
# sees the future, else `'CLEAN'`.

# %%
#| export
AUDIT_GAP_TOL = 1e-9   # nats: the largest relocation gap float64 rounding can produce in a causal model

class _LeakyWrapper(torch.nn.Module):
    "Positive control: the model's logits plus ε times the one-hot of the next token (a deliberate, small leak)."
    def __init__(self, model, eps:float=1e-3):
        super().__init__(); self.model, self.eps, self.config = model, eps, model.config
    def get_input_embeddings(self): return self.model.get_input_embeddings()
    def forward(self, input_ids=None, **kw):
        out = self.model(input_ids=input_ids, **kw)
        nxt = torch.nn.functional.one_hot(input_ids[:, 1:], out.logits.shape[-1]).to(out.logits.dtype)
        out.logits = out.logits + self.eps * torch.cat([nxt, torch.zeros_like(out.logits[:, :1])], 1)
        return out

@torch.no_grad()
def _logits(m, ids:Tensor) -> Tensor: return m(input_ids=ids).logits.double()

def _relocation_gaps(m, ids:Tensor, targets:Sequence[int]) -> list:
    "Per target j: log p(x_j | window) at j-1 inside the full window minus the same from the window x_0..j-1."
    full = torch.log_softmax(_logits(m, ids), -1)[0]
    gaps = []
    for j in targets:
        cut = torch.log_softmax(_logits(m, ids[:, :j]), -1)[0, -1]
        gaps.append(float(full[j - 1, ids[0, j]] - cut[ids[0, j]]))
    return gaps

def _relocation_gap(m, ids:Tensor, targets:Sequence[int]) -> float:
    "The relocation gap of largest magnitude over the targets, nats."
    return max(_relocation_gaps(m, ids, targets), key=abs)

# %%
#| export
@dataclass
class AuditReport:
    "The leak audit's findings; `verdict` is 'CLEAN', 'LEAK' or 'INVALID'."
    model: str                  # class name
    verdict: str                # INVALID (a control failed) > LEAK (a test saw the future) > CLEAN
    delta_pre: float            # future perturbation: max |Δ logits| before the perturbed position (float64; must be 0)
    relocation_gap: float       # target relocation: log p inside the window minus from the cut window, nats
    deterministic: bool         # control: two identical forwards agree exactly
    placebo_ok: bool            # control: writing the tokens back changes nothing
    positive_control_caught: bool  # control: the deliberately leaky wrapper is caught by both tests
    T: int; t_pert: int         # window length and perturbed position
    def __repr__(self):
        return (f"AuditReport({self.model}: {self.verdict}; Δ_pre {self.delta_pre:.1e}, relocation gap {self.relocation_gap:.1e} nats; "
                f"controls: deterministic {self.deterministic}, placebo {self.placebo_ok}, positive control {self.positive_control_caught})")

def _future_delta(m, xa:Tensor, t_pert:int, V:int) -> float:
    xb = xa.clone(); xb[0, t_pert] = (xa[0, t_pert] + 17) % V
    return float((_logits(m, xa)[:, :t_pert] - _logits(m, xb)[:, :t_pert]).abs().max())

def audit(model, input_ids:Optional[Tensor]=None, # (1, T) ids; None: T=32 random ids from `seed`
          T:int=32, t_pert:int=20, seed:int=0, dtype=torch.float64, device='cpu') -> AuditReport:
    "Future perturbation (tolerance 0), target relocation, and the determinism / placebo / positive controls."
    V = _check_probe_args(model, T if input_ids is None else input_ids.shape[-1], t_pert, t_pert - 1)
    m = _probe_copy(model, dtype, device); was = m.training; m.eval()
    dev = next(m.parameters()).device
    xa = (torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(seed)) if input_ids is None else input_ids.view(1, -1)).to(dev)
    T = xa.shape[1]; targets = sorted({2, T // 2, t_pert, T - 1})
    try:
        with torch.enable_grad():
            det = bool(torch.equal(_logits(m, xa), _logits(m, xa)))
            placebo = bool(torch.equal(_logits(m, xa), _logits(m, xa.clone())))
            d_pre, gaps = _future_delta(m, xa, t_pert, V), _relocation_gaps(m, xa, targets)
            gap, leaky = max(gaps, key=abs), _LeakyWrapper(m)
            # the wrapper raises every in-window target's score by ε(1 − p): caught when each gap moves up by it,
            # measured against the model's own gaps so that a model which already leaks is still a valid baseline
            lift = [a - b for a, b in zip(_relocation_gaps(leaky, xa, targets), gaps)]
            caught = min(lift) > 1e-6 and _future_delta(leaky, xa, t_pert, V) > 0
    finally:
        m.train(was)
    verdict = 'INVALID' if not (det and placebo and caught) else ('LEAK' if d_pre > 0 or abs(gap) > AUDIT_GAP_TOL else 'CLEAN')
    return AuditReport(type(model).__name__, verdict, d_pre, gap, det, placebo, caught, T, t_pert)

# %% [markdown]
# Every family member built normally audits CLEAN, with both statistics exactly 0; the historical ξ leak
# (`causal_force=False`) audits LEAK. Then a leak the perturbation test cannot see: a toy model whose every position
# also reads the **last** token of its window. Perturbing a token in the middle changes nothing before it, so
# Δ_pre = 0 and the perturbation test passes; relocating the target shows the model scoring the last token better
# when it is in view. (The probe's gradient test does see this toy, since its leak is differentiable; a leak
# through a path without a gradient, such as a discrete register choice, would escape it too.)

# %%
from semsim.models import MODELS, build_model

# %%
rows = {}
for name in MODELS:
    torch.manual_seed(0)
    kw = dict(vocab_size=61, d=16, max_len=48) | (dict(n_layer=2, n_head=2) if name == 'matched-gpt' else dict(L=3, v_hidden=32, v_depth=2))
    class _S: surprisal = torch.linspace(1, 9, 61)
    mdl = build_model(name, _S(), **kw)
    rows[name] = audit(mdl)
    if hasattr(mdl.config, 'causal_force'):
        mdl.config.causal_force = False; rows[name + ' (causal_force=False)'] = audit(mdl)
    if hasattr(mdl.config, 'prefix_causal_registers'):   # Fock: the full-window registers, the leak the reference shipped
        mdl.config.causal_force, mdl.config.prefix_causal_registers = True, False
        rows[name + ' (prefix_causal_registers=False)'] = audit(mdl)
for k, r in rows.items(): print(f'{k:48s} {r.verdict:8s} Δ_pre {r.delta_pre:.1e}  gap {r.relocation_gap:+.1e}')
assert all(r.verdict == 'CLEAN' for k, r in rows.items() if 'False' not in k)
assert all(r.verdict == 'LEAK' for k, r in rows.items() if 'False' in k)

# %%
class ReadsLast(torch.nn.Module):
    "A leaky toy LM: every position's logits also read the window's last token (a leak that sits where no probe perturbs)."
    def __init__(self, V=61, d=8):
        super().__init__(); self.E = torch.nn.Embedding(V, d); self.config = SPLMConfig(vocab_size=V, d=d, max_len=48)
    def get_input_embeddings(self): return self.E
    def forward(self, input_ids=None, inputs_embeds=None, **kw):
        e = self.E(input_ids) if inputs_embeds is None else inputs_embeds
        return type('Out', (), {'logits': (e + e[:, -1:]) @ self.E.weight.T})()
torch.manual_seed(0)
last = ReadsLast()
rl, pr = audit(last), causal_probe(last)
print(rl); print('probe:', 'PASSED' if pr.perturbation_passed else 'FLAGGED', f'(Δ_pre {pr.delta_pre:.1e})')
test_eq((rl.verdict, rl.delta_pre, pr.perturbation_passed), ('LEAK', 0.0, True)); assert rl.relocation_gap > 0.1

# %% [markdown]
# A model whose forward is not deterministic cannot be audited: the verdict is INVALID, whatever the tests say.

# %%
class Noisy(ReadsLast):
    def forward(self, input_ids=None, **kw):
        out = super().forward(input_ids, **kw); out.logits = out.logits + 1e-3 * torch.randn_like(out.logits); return out
test_eq(audit(Noisy()).verdict, 'INVALID')
