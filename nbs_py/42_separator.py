# %% [markdown]
# # The shared-potential separator
#
# > Fit every layer's update of a model's hidden states with one scalar potential shared by all layers: a model whose dynamics is a potential flow fits, an attention stack does not; the oracle, the capacity sweep, the token axis and a Jacobian-symmetry test say why.

# %%
#| default_exp separator

# %% [markdown]
# The paper's prescriptive diagnostic (semsimula-paper@eb95852: `notebooks/conservative_arch/shared_potential_fit.py`)
# asks whether the layer-to-layer motion of a model's hidden states is the motion of particles in **one** scalar
# energy landscape. For each sentence the hidden states $h_0, \dots, h_L$ (`hs`, shape (L+1, T, d)) are centred per
# layer, $x_\ell = h_\ell - \overline{h_\ell}$ (the mean over the sentence's tokens), and every layer's update is fitted
# as
#
# $$\Delta x_\ell = x_{\ell+1} - x_\ell \;\approx\; \alpha_\ell\, v_\ell \;-\; \beta_\ell\, \nabla_x V_\psi(x_\ell),
# \qquad v_\ell = x_\ell - x_{\ell-1},\qquad \ell = 1, \dots, L-1,$$
#
# | symbol | meaning | code |
# |---|---|---|
# | $x_\ell$ | centred hidden state of one token at depth $\ell$ | `x`, (N, d) |
# | $v_\ell$ | velocity proxy, the previous step | `v` |
# | $\Delta x_\ell$ | the update to explain (the target) | `y` |
# | $V_\psi$ | one MLP $d \to$ `hidden` $\to$ GELU $\to \dots \to 1$, shared by all layers and tokens | `SharedPotential` |
# | $\alpha_\ell, \beta_\ell$ | per-layer scalars (inertia and force gain), initialised to 0 | `alpha`, `beta` |
# | $R^2_\ell$ | $1 - \sum\lVert y-\hat y\rVert^2 / \sum\lVert y-\bar y_\ell\rVert^2$ over layer $\ell$'s samples, $\bar y_\ell$ the per-coordinate mean of the split scored | `r2_test`, `r2_train` |
#
# A conservative-by-construction model (the SPLM: $h$ integrates $m\ddot h = -\nabla V_\theta - m\gamma\dot h$) must
# fit, up to how much its $\xi$-dependence and mass vary; an attention stack has no reason to. The reference's
# headline numbers (median over layers of the TEST $R^2_\ell$): SPLM with fixed $\xi$ **0.90**, the leak-free em_ln
# SPLM **0.949**, the matched attention decoder **0.56** (monotonic decay), pretrained GPT-2 small **0.45** (a
# bathtub, middle band $\ell$ 6–10 at 0.09).
#
# semsim follows the reference's notation with two renamings: its per-layer scalars are `alpha`/`beta` as in the
# paper, and the velocity is the centred step $v_\ell$ (not a model's internal velocity state, which only the oracle
# below uses).

# %%
#| export
from __future__ import annotations
import math
from dataclasses import dataclass, field, asdict
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semsim.core import check_positive_int

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import tempfile, json
from pathlib import Path
import matplotlib.pyplot as plt
import seaborn as sns
import pandas as pd
import transformers
transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)

# %% [markdown]
# ## The split and the trajectories
#
# The corpus is the reference's 50 sentences in 5 domains (`semsim.trajectories.load_stp_corpus`). One
# `np.random.default_rng(seed)` stream shuffles each domain's sentences in corpus order; the first `n_test` of each go
# to TEST, the rest to TRAIN (40/10 for the 50-sentence corpus). A sentence is `tokenizer.encode(s)[:64]`, no BOS.

# %%
#| export
def separator_split(corpus=None, # `{domain: [sentences]}`, a corpus path, or None for $SEMSIM_DATA_DIR/stp_corpus_50.json
                    n_test:int=2, # TEST sentences per domain
                    seed:int=0) -> tuple: # (train, test): lists of (domain, sentence)
    "The reference's split: one default_rng(seed) stream shuffles each domain in corpus order; the first n_test go to TEST."
    from semsim.trajectories import load_stp_corpus
    c = load_stp_corpus(corpus)
    if len(c) == 1 and 'all' in c:
        raise ValueError("the separator's split is per domain: give a corpus {\"domains\": {name: [sentences]}}, not a flat list")
    rng, train, test = np.random.default_rng(seed), [], []
    for dom, sents in c.items():
        if len(sents) <= n_test:
            raise ValueError(f"domain {dom!r} has {len(sents)} sentences: the split needs more than n_test={n_test} per domain")
        order = rng.permutation(len(sents))
        test += [(dom, sents[i]) for i in order[:n_test]]; train += [(dom, sents[i]) for i in order[n_test:]]
    return train, test

# %%
tr, te = separator_split()
print(len(tr), len(te), te[:2])
test_eq((len(tr), len(te)), (40, 10))
test_eq(sorted({d for d, _ in te}), sorted({d for d, _ in tr}))   # two per domain
test_eq(separator_split()[1], te)                                   # deterministic
test_fail(lambda: separator_split(['a', 'b', 'c']), contains='per domain')
test_fail(lambda: separator_split({'x': ['a', 'b']}), contains="domain 'x' has 2 sentences")

# %% [markdown]
# `separator_trajectories` reads every sentence's depth-axis states (L+1, T, d) out of any model semsim can read
# (`semsim.trajectories.trajectory`: semsim's models and any Hugging Face causal LM with `output_hidden_states`).
# `states='depth'` keeps the model's `hidden_states` as they are (the reference's choice; GPT-2's last entry is
# after its final LayerNorm); `'residual'` replaces that entry by the pre-norm residual.

# %%
#| export
def separator_trajectories(model, # a causal LM (nn.Module) with output_hidden_states
                           corpus=None, # as for `separator_split`
                           tokenizer=None, # anything with encode(text) -> ids; default: the model's (`load_tokenizer`)
                           max_length:int=64, # tokens kept per sentence
                           states:str='depth', # 'depth' (hidden_states as they are) or 'residual' (no final norm)
                           n_test:int=2, seed:int=0) -> tuple: # (train, test): lists of (L+1, T, d) tensors
    "Depth-axis hidden states of the TRAIN and TEST sentences of the reference's split."
    from semsim.trajectories import trajectory, load_tokenizer
    if states not in ('depth', 'residual'): raise ValueError(f"states must be 'depth' or 'residual', got {states!r}")
    train, test = separator_split(corpus, n_test, seed)
    tok = load_tokenizer(model, tokenizer)
    def read(items):
        out = []
        for dom, s in items:
            tj = trajectory(model, s, tok, max_length=max_length, meta={'domain': dom})
            out.append(tj.depth if states == 'depth' else tj.residual)
        return out
    return read(train), read(test)

# %% [markdown]
# ## Samples
#
# `separator_samples` turns a list of trajectories into regression samples (x, v, y, layer). On the **depth** axis
# (§ above) the samples are all tokens at $\ell = 1, \dots, L-1$. `layers=(a, b)` restricts them to a contiguous
# sub-stack of blocks $a..b$ (block $\ell$ maps $h_{\ell-1} \to h_\ell$, 1-based): only samples whose two steps both lie
# inside, $\ell = a, \dots, b-1$ (the reference's sub-stack separator for hybrids). On the **token** axis the roles
# swap: at each fixed layer $\ell = 0, \dots, L$ the token index is time, $x = x_{\ell,t}$, $v = x_{\ell,t} - x_{\ell,t-1}$,
# $y = x_{\ell,t+1} - x_{\ell,t}$ for $t \in [1+\Delta, T-2-\Delta]$ with $\Delta = 2$ (the reference's BOS/EOS skip).

# %%
#| export
def _as_states(t) -> Tensor:
    "(L+1, T, d) float32 states of a trajectory tensor or `Trajectory`."
    s = getattr(t, 'depth', t)
    if not isinstance(s, Tensor) or s.dim() != 3:
        raise ValueError(f"a trajectory must be an (L+1, T, d) tensor or a Trajectory, got {getattr(s, 'shape', type(s).__name__)}")
    return s.detach().float().cpu()

def separator_samples(trajs:Sequence, # (L+1, T, d) tensors or `Trajectory` objects
                      axis:str='depth', # 'depth' or 'token'
                      layers:Optional[tuple]=None, # depth axis: blocks (a, b), 1-based inclusive; None: all
                      skip:int=2) -> dict: # token axis: Δ, tokens skipped at each end
    "Regression samples x, v, y (N, d) and their layer ids (N,), from per-sentence per-layer centred states."
    if axis not in ('depth', 'token'): raise ValueError(f"axis must be 'depth' or 'token', got {axis!r}")
    xs, vs, ys, ls = [], [], [], []
    for t in trajs:
        h = _as_states(t); L = h.shape[0] - 1
        x = h - h.mean(1, keepdim=True)                                    # per sentence, per layer
        if axis == 'depth':
            a, b = layers or (1, L)
            if not 1 <= a < b <= L: raise ValueError(f"layers must be blocks (a, b) with 1 <= a < b <= L={L}, got {layers}")
            for l in range(a, b):
                xs.append(x[l]); vs.append(x[l] - x[l - 1]); ys.append(x[l + 1] - x[l]); ls.append(torch.full((x.shape[1],), l))
        else:
            T = x.shape[1]; ts = torch.arange(1 + skip, T - 1 - skip)
            if len(ts) == 0: continue                                       # too short for the token axis
            for l in range(L + 1):
                xs.append(x[l, ts]); vs.append(x[l, ts] - x[l, ts - 1]); ys.append(x[l, ts + 1] - x[l, ts]); ls.append(torch.full((len(ts),), l))
    if not xs: raise ValueError(f"no {axis}-axis samples: the trajectories are too short (token axis needs T > {2 * skip + 2})")
    return {'x': torch.cat(xs), 'v': torch.cat(vs), 'y': torch.cat(ys), 'layer': torch.cat(ls).long()}

# %%
g = torch.Generator().manual_seed(0)
demo = [torch.randn(5, 9, 3, generator=g) for _ in range(2)]             # L = 4, T = 9, d = 3
s = separator_samples(demo)
test_eq((s['x'].shape, sorted(s['layer'].unique().tolist())), ((2 * 3 * 9, 3), [1, 2, 3]))
x0 = demo[0] - demo[0].mean(1, keepdim=True)
test_close(s['y'][:9], x0[2] - x0[1], eps=1e-6); test_close(s['v'][:9], x0[1] - x0[0], eps=1e-6)
test_eq(sorted(separator_samples(demo, layers=(2, 4))['layer'].unique().tolist()), [2, 3])
st = separator_samples(demo, axis='token')
test_eq((sorted(st['layer'].unique().tolist()), st['x'].shape[0]), ([0, 1, 2, 3, 4], 2 * 5 * 3))   # t = 3..5 = [1+Δ, T-2-Δ]
test_fail(lambda: separator_samples(demo, layers=(0, 3)), contains='1 <= a < b <= L=4')
test_fail(lambda: separator_samples([torch.randn(3, 4)]), contains='(L+1, T, d)')

# %% [markdown]
# ## R² and the velocity-only baseline
#
# $R^2$ is scored per layer against the mean of the split being scored (so a TEST $R^2_\ell$ uses TEST's
# $\bar y_\ell$), and pooled over all layers against the pooled mean. The velocity-only baseline is the best
# inertia-only fit, $\hat y = \alpha_\ell v$ with the closed form $\alpha_\ell = \sum v\cdot y / \sum v\cdot v$ on TRAIN; the
# static null $\hat y = 0$ is the other baseline (its $R^2$ is $\le 0$ by construction, so it is not reported).

# %%
#| export
def r2_score(y:Tensor, # targets, (N, d)
             yhat:Tensor) -> float: # predictions, (N, d)
    "1 - Σ‖y - ŷ‖² / Σ‖y - ȳ‖², ȳ the per-coordinate mean of y, summed over samples and coordinates."
    y, yhat = y.double(), yhat.double()
    tss = (y - y.mean(0)).pow(2).sum()
    return float(1 - (y - yhat).pow(2).sum() / tss) if tss > 0 else float('nan')

def per_layer_r2(y:Tensor, yhat:Tensor, # (N, d)
                 layer:Tensor, # layer ids, (N,)
                 layer_ids:Sequence[int]) -> list: # the layers to score, in order
    "R²_ℓ of each layer, against that layer's own mean."
    return [r2_score(y[layer == l], yhat[layer == l]) for l in layer_ids]

def velocity_only(train:dict, test:dict, layer_ids:Sequence[int]) -> tuple: # samples as `separator_samples` returns
    "(α_ℓ, TRAIN R²_ℓ, TEST R²_ℓ) of the inertia-only fit ŷ = α_ℓ v, α_ℓ = Σv·y/Σv·v on TRAIN."
    a = []
    for l in layer_ids:
        v, y = train['v'][train['layer'] == l].double(), train['y'][train['layer'] == l].double()
        den = float((v * v).sum()); a.append(float((v * y).sum()) / den if den > 0 else 0.0)
    A = {l: al for l, al in zip(layer_ids, a)}
    pred = lambda s: s['v'] * torch.tensor([A.get(int(l), 0.0) for l in s['layer']], dtype=s['v'].dtype)[:, None]
    return a, per_layer_r2(train['y'], pred(train), train['layer'], layer_ids), per_layer_r2(test['y'], pred(test), test['layer'], layer_ids)

# %%
g = torch.Generator().manual_seed(1)
y = torch.randn(200, 3, generator=g)
test_close(r2_score(y, y), 1.0, eps=1e-12); test_close(r2_score(y, y.mean(0).expand_as(y)), 0.0, eps=1e-12)
vtr = {'v': y, 'y': 0.7 * y, 'layer': torch.ones(200, dtype=torch.long)}
a, r_tr, r_te = velocity_only(vtr, vtr, [1])
test_close(a[0], 0.7, eps=1e-6); test_close(r_te[0], 1.0, eps=1e-9)

# %% [markdown]
# ## The shared potential and the fit
#
# $V_\psi$ is the reference's MLP: `depth` hidden layers of width `hidden` with GELU, then a linear read-out to one
# number; all Linear weights $\sim \mathcal N(0, 0.02^2)$, biases zero. $\nabla_x V_\psi$ is taken by autograd with
# `create_graph=True`, so the loss can be differentiated through the force.

# %%
#| export
class SharedPotential(nn.Module):
    "V_ψ: an MLP d -> hidden -> GELU -> ... -> 1, weights N(0, 0.02²), zero biases; `force_grad` is ∇_x V_ψ."
    def __init__(self, d:int, hidden:int=256, depth:int=2):
        super().__init__()
        for k, v in (('d', d), ('hidden', hidden), ('depth', depth)): check_positive_int(k, v)
        dims = [d] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(hidden, 1)
        for lin in [*self.layers, self.out]: nn.init.normal_(lin.weight, std=0.02); nn.init.zeros_(lin.bias)
    def forward(self, x:Tensor) -> Tensor: # positions (N, d) -> V (N,)
        for lin in self.layers: x = F.gelu(lin(x))
        return self.out(x)[..., 0]
    def grad(self, x:Tensor, create_graph:bool=True) -> Tensor: # ∇_x V_ψ(x), (N, d)
        "The gradient of V_ψ at x, differentiable in ψ when create_graph."
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            g, = torch.autograd.grad(self(x).sum(), x, create_graph=create_graph)
        return g

def potential_params(d:int, hidden:int, depth:int) -> int:
    "Parameter count of V_ψ(d, hidden, depth)."
    return (d + 1) * hidden + (depth - 1) * (hidden + 1) * hidden + hidden + 1

# %%
torch.manual_seed(0)
Vp = SharedPotential(4, 8, 2).double()
x = torch.randn(5, 4, dtype=torch.float64)
e = torch.zeros(4, dtype=torch.float64); e[2] = 1e-6
fd = (Vp(x + e) - Vp(x - e)) / 2e-6
test_close(Vp.grad(x)[:, 2], fd, eps=1e-9)                                   # autograd force vs finite differences
test_eq(potential_params(768, 128, 2), sum(p.numel() for p in SharedPotential(768, 128, 2).parameters()))
print(f"V_psi(768, 128, 2): {potential_params(768, 128, 2):,} parameters (the reference's 0.12M)")

# %% [markdown]
# ### The profile of a per-layer curve
#
# The reference names three shapes of the TEST $R^2_\ell$ curve. semsim decides them by a stated rule, checked in
# this order:
#
# 1. **monotonic decay**: Spearman $\rho(\ell, R^2_\ell) \le -0.8$ and $R^2_\text{first} - R^2_\text{last} \ge 0.2$;
# 2. **uniform**: at least 70 % of the layers lie within 0.15 of the median (one dip allowed);
# 3. **bathtub**: both ends exceed the mean of the middle third of the layers by at least 0.2;
# 4. otherwise **irregular**.

# %%
#| export
PROFILES = ('monotonic decay', 'uniform', 'bathtub', 'irregular')

def classify_profile(r2:Sequence[float]) -> str: # per-layer R², in layer order
    "'monotonic decay', 'uniform', 'bathtub' or 'irregular', by the rule stated in the chapter."
    from scipy.stats import spearmanr
    r = np.asarray([v for v in r2 if np.isfinite(v)], dtype=float); n = len(r)
    if n == 0: raise ValueError("classify_profile needs at least one finite R²")
    if n >= 3 and spearmanr(np.arange(n), r).statistic <= -0.8 and r[0] - r[-1] >= 0.2: return 'monotonic decay'
    if np.mean(np.abs(r - np.median(r)) <= 0.15) >= 0.7: return 'uniform'
    if n >= 3:
        mid = r[n // 3: n - n // 3] if n >= 5 else r[1:-1]
        if min(r[0], r[-1]) - mid.mean() >= 0.2: return 'bathtub'
    return 'irregular'

# %% [markdown]
# The rule reproduces the reference's names for its four curves (§ table of the three-way comparison):

# %%
REFERENCE_R2 = {   # per-layer TEST R² of the reference's separator runs, ℓ = 1 ...
    'SPLM fixed-ξ': [.970, .668, .819, .280, .901, .927, .905],
    'SPLM em_ln leak-free': [.960, .949, .950, .951, .948, .941, .925],
    'matched GPT': [.809, .744, .659, .555, .510, .387, .267],
    'GPT-2 small': [.715, .990, .795, .731, .452, .193, .066, .039, .057, .081, .977]}
got = {k: classify_profile(v) for k, v in REFERENCE_R2.items()}
print(got)
test_eq(list(got.values()), ['uniform', 'uniform', 'monotonic decay', 'bathtub'])
test_eq([round(float(np.median(v)), 3) for v in REFERENCE_R2.values()], [0.901, 0.949, 0.555, 0.452])

# %% [markdown]
# ### `separator_fit`
#
# The regression of the reference exactly: per-layer $\alpha_\ell, \beta_\ell$ from 0 and the shared $V_\psi$ trained
# together by AdamW (lr 3e-3, weight decay 1e-4 applied to every parameter, $\alpha$ and $\beta$ included, betas
# (0.9, 0.95)), `steps` steps of `batch` samples drawn with replacement from TRAIN, gradient-norm clip 5.0, loss
# $\mathrm{MSE}(\hat y, y) + 10^{-5}\,\overline{\lVert\nabla V_\psi\rVert^2}$, seed `seed`.

# %%
#| export
@dataclass
class SeparatorFit:
    "Result of `separator_fit`: per-layer TEST/TRAIN R² of the shared potential and of velocity-only, the scalars, the profile."
    axis: str                   # 'depth' or 'token'
    layers: list                # layer ids ℓ of the per-layer lists
    r2_test: list               # TEST R²_ℓ of the shared-potential fit
    r2_train: list              # TRAIN R²_ℓ
    r2_velocity_only: list      # TEST R²_ℓ of ŷ = α_ℓ v (closed form on TRAIN)
    alpha: list                 # fitted α_ℓ
    beta: list                  # fitted β_ℓ
    median_r2: float            # median over layers of r2_test (the headline)
    pooled_r2: float            # TEST R² over all layers together
    pooled_r2_train: float      # TRAIN R² over all layers together
    profile: str                # classify_profile(r2_test)
    n_train: int                # TRAIN samples
    n_test: int                 # TEST samples
    hidden: int                 # V_ψ width
    depth: int                  # V_ψ hidden layers
    steps: int                  # optimiser steps
    params: int                 # parameters of V_ψ
    loss_curve: list = field(default_factory=list)  # training loss every 100 steps
    @property
    def gain(self) -> list: # TEST R² gain over velocity-only, per layer
        return [a - b for a, b in zip(self.r2_test, self.r2_velocity_only)]
    def to_dict(self) -> dict: return {**asdict(self), 'gain': self.gain}
    def __repr__(self):
        return (f"SeparatorFit({self.axis}, {len(self.layers)} layers: median TEST R² {self.median_r2:.3f}, pooled {self.pooled_r2:.3f}, "
                f"{self.profile}; velocity-only median {np.median(self.r2_velocity_only):.3f}; V_ψ {self.hidden}x{self.depth}, {self.steps} steps)")

# %%
#| export
def _samples_of(data, axis, layers, skip) -> dict:
    "Samples from trajectories, or already-made samples (a dict from `separator_samples`)."
    if isinstance(data, dict): return data
    if not len(data): raise ValueError("no trajectories given")
    return separator_samples(data, axis, layers, skip)

def _train_shared(tr:dict, ids:list, hidden:int, depth:int, steps:int, batch:int, seed:int, lr:float) -> tuple:
    "(V_ψ, α, β, loss every 100 steps): the reference's AdamW recipe on TRAIN samples."
    torch.manual_seed(seed)
    d = tr['x'].shape[1]; pot = SharedPotential(d, hidden, depth)
    pos = torch.full((max(ids) + 1,), -1, dtype=torch.long); pos[torch.tensor(ids)] = torch.arange(len(ids))
    alpha, beta = nn.Parameter(torch.zeros(len(ids))), nn.Parameter(torch.zeros(len(ids)))
    params = [*pot.parameters(), alpha, beta]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, betas=(0.9, 0.95))
    g, N, curve = torch.Generator().manual_seed(seed), tr['x'].shape[0], []
    for step in range(steps):
        i = torch.randint(0, N, (batch,), generator=g)
        x, v, y, k = tr['x'][i], tr['v'][i], tr['y'][i], pos[tr['layer'][i]]
        gV = pot.grad(x)
        loss = F.mse_loss(alpha[k, None] * v - beta[k, None] * gV, y) + 1e-5 * gV.pow(2).mean()
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0); opt.step()
        if step % 100 == 0 or step == steps - 1: curve.append(loss.detach().item())
    return pot, alpha.detach(), beta.detach(), pos, curve

def _predict(pot:SharedPotential, alpha:Tensor, beta:Tensor, pos:Tensor, s:dict, chunk:int=8192) -> Tensor:
    "ŷ = α_ℓ v - β_ℓ ∇V_ψ(x) for every sample, in chunks."
    out = []
    for j in range(0, s['x'].shape[0], chunk):
        k = pos[s['layer'][j:j + chunk]]
        out.append((alpha[k, None] * s['v'][j:j + chunk] - beta[k, None] * pot.grad(s['x'][j:j + chunk], create_graph=False)).detach())
    return torch.cat(out)

# %%
#| export
def separator_fit(train, # TRAIN: (L+1, T, d) tensors / `Trajectory` objects, or samples from `separator_samples`
                  test, # TEST, the same kinds
                  hidden:int=256, # V_ψ width
                  depth:int=2, # V_ψ hidden layers
                  steps:int=4000, # AdamW steps
                  seed:int=0, # seeds V_ψ's initialisation and the batches
                  axis:str='depth', # 'depth' (layer index as time) or 'token' (token index as time, each layer)
                  layers:Optional[tuple]=None, # depth axis: a contiguous sub-stack of blocks (a, b)
                  batch:int=2048, # samples per step, drawn with replacement
                  lr:float=3e-3, # AdamW learning rate
                  skip:int=2) -> SeparatorFit: # token axis: Δ
    "The shared-potential separator: Δx_ℓ ≈ α_ℓ v_ℓ − β_ℓ ∇V_ψ(x_ℓ) with one V_ψ for all layers, scored per layer on TEST."
    for k, v in (('hidden', hidden), ('depth', depth), ('steps', steps), ('batch', batch)): check_positive_int(k, v)
    tr, te = _samples_of(train, axis, layers, skip), _samples_of(test, axis, layers, skip)
    if tr['x'].shape[1] != te['x'].shape[1]: raise ValueError(f"TRAIN has width {tr['x'].shape[1]}, TEST {te['x'].shape[1]}")
    ids = sorted(set(tr['layer'].tolist()))
    missing = sorted(set(te['layer'].tolist()) - set(ids))
    if missing: raise ValueError(f"TEST has layers {missing} that TRAIN lacks")
    pot, alpha, beta, pos, curve = _train_shared(tr, ids, hidden, depth, steps, batch, seed, lr)
    p_tr, p_te = _predict(pot, alpha, beta, pos, tr), _predict(pot, alpha, beta, pos, te)
    r_te = per_layer_r2(te['y'], p_te, te['layer'], ids)
    _, _, r_vel = velocity_only(tr, te, ids)
    return SeparatorFit(axis, ids, r_te, per_layer_r2(tr['y'], p_tr, tr['layer'], ids), r_vel, alpha.tolist(), beta.tolist(),
                        float(np.nanmedian(r_te)), r2_score(te['y'], p_te), r2_score(tr['y'], p_tr), classify_profile(r_te),
                        tr['x'].shape[0], te['x'].shape[0], hidden, depth, steps, potential_params(tr['x'].shape[1], hidden, depth), curve)

# %% [markdown]
# ### Planted flows: a shared potential is found, a non-shared flow is not
#
# Two synthetic "models" make trajectories with a known update rule, $x_{\ell+1} = x_\ell + \alpha_\ell v_\ell + u_\ell(x_\ell)$.
# In the first, $u_\ell = -\beta_\ell \nabla V(x)$ with one even potential $V(x) = \sum_i c_i \log\cosh x_i + \tfrac k2\lVert x\rVert^2$ for
# all layers: a shared potential flow. In the second, $u_\ell = \beta_\ell R_\ell x$ with a different random
# antisymmetric $R_\ell$ at each layer: a rotation, which no potential produces. Tokens come in $\pm$ pairs, so every
# layer's token mean is zero and the centring changes nothing. The separator must explain the first well beyond
# velocity-only and add nothing to the second:

# %%
def planted(kind, n_sent, seed, L=6, T=16, d=4):
    g = torch.Generator().manual_seed(seed)
    c, k = torch.tensor([1.5, 0.5, 1.0, 2.0]), 0.3
    alpha, beta = torch.linspace(0.2, 0.4, L), torch.linspace(0.6, 0.3, L)
    R = torch.randn(L, d, d, generator=torch.Generator().manual_seed(99)); R = R - R.transpose(1, 2)
    gradV = lambda x: c * torch.tanh(x) + k * x
    out = []
    for _ in range(n_sent):
        h0 = 1.5 * torch.randn(T // 2, d, generator=g); h0 = torch.cat([h0, -h0])
        hs = [h0, h0 + 0.1 * torch.cat([e := torch.randn(T // 2, d, generator=g), -e])]
        for l in range(1, L):
            x, v = hs[-1], hs[-1] - hs[-2]
            u = -beta[l] * gradV(x) if kind == 'shared' else 0.3 * x @ R[l].T
            hs.append(x + alpha[l] * v + u)
        out.append(torch.stack(hs))
    return out

fits = {kind: separator_fit(planted(kind, 20, 0), planted(kind, 5, 1), hidden=64, steps=600, batch=512)
        for kind in ('shared', 'rotation')}
for kind, f in fits.items(): print(kind, f, 'gain', np.round(f.gain, 3))
assert fits["shared"].median_r2 > 0.95 and np.median(fits["shared"].gain) > 0.2 and min(fits["shared"].gain) > 0.05  # found, beyond inertia
assert max(fits['rotation'].gain) < 0.05                                             # a curl is not a potential
