# %% [markdown]
# # The Markov-order test
#
# > Are a model's last-layer token trajectories second-order (does $h_{t-1}$ help predict $h_{t+1}$ beyond $h_t$)? A pre-registered, leave-one-sentence-out kernel-ridge test; for GPT-2 the answer is no (decision C: first order not rejected).

# %%
#| default_exp markov_order

# %% [markdown]
# A Lagrangian with inertia is a second-order law: the next state depends on the current state *and* velocity, i.e.
# on two past states. The reference's test (semsimula-paper@eb95852: `notebooks/dynamics_order_test/`) asks whether
# the last-layer token trajectory $h_0, \dots, h_{T-1}$ of a model needs that. From every quadruple
# $(h_{t-2}, h_{t-1}, h_t, h_{t+1})$ it fits, for order $k$,
#
# $$R_k = \mathbb E\,\lVert h_{t+1} - \hat F_k(h_t, \dots, h_{t-k+1})\rVert^2,$$
#
# with $\hat F_k$ an RBF kernel ridge regression whose $\alpha$ and $\gamma$ are chosen by an inner cross-validation, in a PCA
# basis of $p = 50$ components fitted on the training fold, leave-one-sentence-out. The statistic is
# $\rho_{12} = \bar R_1/\bar R_2$, with a two-sided Wilcoxon signed-rank test on the paired per-quadruple residuals and a
# sentence-cluster bootstrap (10,000 resamples) of $\bar R_1 - \bar R_2$. The pre-registered rule rejects first order
# when $\rho_{12} \ge 1.20$ and $p < 10^{-3}$.
#
# | symbol | meaning | code |
# |---|---|---|
# | $h_t$ | last-layer state of token $t$ (the `hidden_states` entry `layer`, default the last) | `h`, (T, d) |
# | $p$ | PCA components, fitted on the training fold | `p` |
# | $R_k$ | per-quadruple squared error of order $k$, in PCA coordinates | `R1`, `R2` |
# | $\rho_{12}$ | $\bar R_1 / \bar R_2$ | `rho12` |
#
# **Decision letters** (the reference names C; semsim states all three): **A**, first order rejected ($\rho_{12} \ge 1.20$
# and $p < 10^{-3}$); **B**, second order helps significantly but below the pre-registered size ($p < 10^{-3}$ and
# $1 < \rho_{12} < 1.20$); **C**, first order not rejected (anything else).

# %%
#| export
from __future__ import annotations
import json, math
from dataclasses import dataclass, asdict, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import tempfile
import matplotlib.pyplot as plt
import seaborn as sns
import pandas as pd
torch.set_num_threads(1)
from semsim.trajectories import load_model, tiny_gpt2_config, load_stp_corpus

# %% [markdown]
# ## Quadruples

# %%
#| export
def _token_states(t, layer:int) -> np.ndarray:
    "(T, d) float64 states at `layer` of a `Trajectory`, an (L+1, T, d) depth tensor or a (T, d) tensor."
    s = getattr(t, 'depth', t)
    s = s.detach().cpu().double() if isinstance(s, Tensor) else torch.as_tensor(np.asarray(s), dtype=torch.float64)
    if s.dim() == 3: s = s[layer]
    if s.dim() != 2: raise ValueError(f"a trajectory must be (T, d), (L+1, T, d) or a Trajectory, got shape {tuple(s.shape)}")
    return s.numpy()

def quadruples(trajs:Sequence, layer:int=-1) -> dict: # 'h3' (N, 3, d): h_{t-2}, h_{t-1}, h_t; 'y' (N, d): h_{t+1}; 'group' (N,)
    "Every (h_{t-2}, h_{t-1}, h_t, h_{t+1}) of every sentence, t = 2..T-2, with the sentence index."
    H, Y, G = [], [], []
    for i, t in enumerate(trajs):
        h = _token_states(t, layer)
        for s in range(2, h.shape[0] - 1): H.append(h[s - 2:s + 1]); Y.append(h[s + 1]); G.append(i)
    if len(set(G)) < 3: raise ValueError(f"the test needs quadruples from at least 3 sentences (T >= 4 each), got {len(set(G))}")
    return {'h3': np.stack(H), 'y': np.stack(Y), 'group': np.array(G)}

# %%
q = quadruples([torch.arange(12.).view(6, 2), torch.arange(10.).view(5, 2), torch.zeros(4, 2)])
test_eq((q['h3'].shape, q['y'].shape, q['group'].tolist()), ((6, 3, 2), (6, 2), [0, 0, 0, 1, 1, 2]))
test_eq(q['h3'][0, :, 0].tolist() + [q['y'][0, 0]], [0., 2., 4., 6.])
test_fail(lambda: quadruples([torch.zeros(5, 2)] * 2), contains='at least 3 sentences')

# %% [markdown]
# ## One fold: PCA on the training fold, kernel ridge with inner cross-validation
#
# scikit-learn does the work: `PCA` fitted on the training fold's states, `KernelRidge(kernel='rbf')` inside
# `GridSearchCV` over $\alpha$ and $\gamma$ with a `GroupKFold` by sentence (so the inner folds, like the outer ones, never
# split a sentence). The $\gamma$ grid is scaled by the data, $\gamma_0 = 1/(n_\text{features}\,\mathrm{Var}(X))$.

# %%
#| export
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)   # kernel-ridge α grid
GAMMA_SCALES = (0.1, 1.0, 10.0)     # γ grid, in units of 1/(n_features · Var X)

def _fit_predict(Xtr:np.ndarray, ytr:np.ndarray, gtr:np.ndarray, Xte:np.ndarray, inner:int, alphas, gscales) -> np.ndarray:
    "RBF kernel ridge with α, γ chosen by grouped inner cross-validation; predictions for Xte."
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV, GroupKFold
    g0 = 1.0 / (Xtr.shape[1] * max(Xtr.var(), 1e-300))
    cv = GroupKFold(n_splits=min(inner, len(np.unique(gtr))))
    gs = GridSearchCV(KernelRidge(kernel='rbf'), {'alpha': list(alphas), 'gamma': [g0 * s for s in gscales]},
                      cv=cv, scoring='neg_mean_squared_error')
    gs.fit(Xtr, ytr, groups=gtr)
    return gs.predict(Xte)

def fold_residuals(q:dict, test_group:int, p:int=50, inner:int=3, alphas=ALPHAS, gscales=GAMMA_SCALES) -> tuple:
    "(R1, R2) of the held-out sentence's quadruples: squared errors of the order-1 and order-2 fits in the fold's PCA basis."
    from sklearn.decomposition import PCA
    te, tr = q['group'] == test_group, q['group'] != test_group
    N, _, d = q['h3'].shape
    pca = PCA(n_components=min(p, d, int(tr.sum()))).fit(q['h3'][tr].reshape(-1, d))
    Z = pca.transform(q['h3'].reshape(-1, d)).reshape(N, 3, -1); Y = pca.transform(q['y'])
    out = []
    for k in (1, 2):
        X = Z[:, 3 - k:][:, ::-1].reshape(N, -1)                      # (h_t, ..., h_{t-k+1})
        pred = _fit_predict(X[tr], Y[tr], q['group'][tr], X[te], inner, alphas, gscales)
        out.append(((Y[te] - pred) ** 2).sum(1))
    return tuple(out)

# %% [markdown]
# ## The test

# %%
#| export
@dataclass
class MarkovOrderResult:
    "Leave-one-sentence-out comparison of first- and second-order predictors of h_{t+1}."
    R1: float                   # mean order-1 squared error R̄₁
    R2: float                   # mean order-2 squared error R̄₂
    rho12: float                # R̄₁ / R̄₂
    p12: float                  # two-sided Wilcoxon signed-rank p of the paired residuals
    ci_diff: tuple              # 95 % sentence-cluster bootstrap interval of R̄₁ − R̄₂
    decision: str               # 'A' (first order rejected), 'B' (significant, below the effect size), 'C' (not rejected)
    n_quadruples: int           # quadruples scored
    n_sentences: int            # folds
    p: int                      # PCA components
    pairs: tuple = field(default=(), repr=False)  # (R1, R2, sentence) per quadruple, arrays (not in to_dict)
    def to_dict(self) -> dict: return {k: v for k, v in asdict(self).items() if k != 'pairs'}
    def __repr__(self):
        return (f"MarkovOrderResult(ρ12 {self.rho12:.4f}, p {self.p12:.2g}, R̄1 {self.R1:.4g}, R̄2 {self.R2:.4g}, "
                f"CI(R̄1−R̄2) [{self.ci_diff[0]:.4g}, {self.ci_diff[1]:.4g}], decision {self.decision})")

def decide(rho12:float, p12:float, rho_min:float=1.20, alpha:float=1e-3) -> str:
    "The decision letter: A if ρ12 ≥ rho_min and p < alpha; B if p < alpha and 1 < ρ12 < rho_min; else C."
    if p12 < alpha and rho12 >= rho_min: return 'A'
    if p12 < alpha and rho12 > 1: return 'B'
    return 'C'

def cluster_bootstrap(d:np.ndarray, groups:np.ndarray, n_boot:int=10_000, seed:int=0) -> tuple:
    "95 % interval of mean(d) from resampling whole sentences (clusters) with replacement."
    rng = np.random.default_rng(seed); ids = np.unique(groups)
    sums = np.array([d[groups == g].sum() for g in ids]); cnts = np.array([(groups == g).sum() for g in ids])
    pick = rng.integers(0, len(ids), (n_boot, len(ids)))
    means = sums[pick].sum(1) / cnts[pick].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))

# %%
#| export
def markov_order_test(trajs:Sequence, # `Trajectory` objects or (L+1, T, d) / (T, d) tensors, one per sentence
                      layer:int=-1, p:int=50, inner:int=3, n_boot:int=10_000, seed:int=0,
                      alphas=ALPHAS, gscales=GAMMA_SCALES) -> MarkovOrderResult:
    "The Markov-order test: leave-one-sentence-out R1 vs R2, ρ12, Wilcoxon, cluster bootstrap and the decision."
    from scipy.stats import wilcoxon
    q = quadruples(trajs, layer)
    R1, R2, G = [], [], []
    for g in np.unique(q['group']):
        r1, r2 = fold_residuals(q, g, p, inner, alphas, gscales)
        R1.append(r1); R2.append(r2); G.append(np.full(len(r1), g))
    R1, R2, G = np.concatenate(R1), np.concatenate(R2), np.concatenate(G)
    rho = float(R1.mean() / R2.mean()); pv = float(wilcoxon(R1, R2, alternative='two-sided').pvalue)
    return MarkovOrderResult(float(R1.mean()), float(R2.mean()), rho, pv, cluster_bootstrap(R1 - R2, G, n_boot, seed),
                             decide(rho, pv), len(R1), len(np.unique(G)), min(p, q['h3'].shape[-1]), (R1, R2, G))

# %% [markdown]
# A planted second-order process (a noisy damped oscillator, $h_{t+1} = 2\cos\omega\, h_t - 0.95\, h_{t-1} + \varepsilon$,
# whose next state is not determined by the current one) is rejected; a planted first-order process
# ($h_{t+1} = 0.8\tanh(A h_t) + \varepsilon$) is not:

# %%
def planted_tokens(order, n_sent=12, T=25, d=3, seed=0):
    g = np.random.default_rng(seed); A = np.random.default_rng(1).normal(size=(d, d)); out = []
    for _ in range(n_sent):
        h = [g.normal(size=d), g.normal(size=d)]
        for _ in range(T - 2):
            nxt = (2 * np.cos(0.5) * h[-1] - 0.95 * h[-2]) if order == 2 else 0.8 * np.tanh(A @ h[-1])
            h.append(nxt + 0.05 * g.normal(size=d))
        out.append(torch.tensor(np.array(h)))
    return out
mo = {k: markov_order_test(planted_tokens(k), n_boot=2000) for k in (1, 2)}
for k, r in mo.items(): print(f'order-{k} process:', r)
test_eq((mo[2].decision, mo[1].decision), ('A', 'C'))
assert mo[2].rho12 > 2 and mo[2].ci_diff[0] > 0
test_eq([decide(1.3, 1e-4), decide(1.1, 1e-4), decide(1.3, 0.01), decide(0.98, 1e-6)], ['A', 'B', 'C', 'C'])

# %% [markdown]
# ## On a model
#
# `analyze_markov_order` reads the last-layer trajectories of all 50 sentences (`max_length` 64) and runs the test,
# leave-one-sentence-out over the 50 folds; given `out` it writes `markov_order.json` and a figure of the paired
# residuals.

# %%
#| export
def plot_residual_pairs(R1:np.ndarray, R2:np.ndarray, ax=None, title:str=''):
    "Per-quadruple order-1 vs order-2 squared errors (log-log), the diagonal marking 'no difference'."
    import matplotlib.pyplot as plt, seaborn as sns
    if ax is None: _, ax = plt.subplots(figsize=(4.2, 4))
    sns.scatterplot(x=R2, y=R1, s=8, alpha=0.5, ax=ax, edgecolor=None)
    lo, hi = min(R1.min(), R2.min()), max(R1.max(), R2.max())
    ax.plot([lo, hi], [lo, hi], 'k--', lw=1); ax.set_xscale('log'); ax.set_yscale('log')
    ax.set_xlabel('R₂ (order 2)'); ax.set_ylabel('R₁ (order 1)'); ax.set_title(title, fontsize=9)
    return ax

def analyze_markov_order(model, corpus=None, out=None, tokenizer=None, layer:int=-1, max_length:int=64, p:int=50,
                         n_boot:int=10_000, seed:int=0, label:Optional[str]=None) -> dict:
    "The Markov-order test on a model's last-layer trajectories of the corpus, as a JSON-ready dict."
    from semsim.trajectories import load_model, load_stp_corpus, corpus_trajectories, model_label
    c = load_stp_corpus(corpus)
    name = label or (str(model) if isinstance(model, (str, Path)) else model_label(model))
    m = load_model(model) if not isinstance(model, torch.nn.Module) else model
    trajs = corpus_trajectories(m, c, tokenizer=tokenizer, max_length=max_length)
    r = markov_order_test(trajs, layer, p, n_boot=n_boot, seed=seed)
    res = {'model': name, 'layer': layer, 'n_sentences': len(trajs), **r.to_dict()}
    if out is not None:
        import matplotlib.pyplot as plt
        from semsim.core import atomic_write_text
        out = Path(out); out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out/'markov_order.json', json.dumps(res, indent=1))
        ax = plot_residual_pairs(r.pairs[0], r.pairs[1], title=f"{name}: ρ12 {r.rho12:.3f}, decision {r.decision}")
        ax.figure.tight_layout(); ax.figure.savefig(out/'markov_order.png', dpi=110); plt.close(ax.figure)
    return res

# %% [markdown]
# On the CI-sized random GPT-2 and 12 of the corpus's sentences (4 from each of 3 domains; the full test has 50
# folds and takes minutes):

# %%
small = {dom: s[:4] for dom, s in list(load_stp_corpus().items())[:3]}
with tempfile.TemporaryDirectory() as d:
    res = analyze_markov_order(load_model(tiny_gpt2_config(), seed=0), small, out=d, n_boot=500, p=10)
    test_eq(sorted(x.name for x in Path(d).iterdir()), ['markov_order.json', 'markov_order.png'])
print({k: res[k] for k in ('rho12', 'p12', 'decision', 'n_quadruples', 'n_sentences')})
test_eq((res['n_sentences'], res['decision'] in 'ABC', 'pairs' in res), (12, True, False))

# %% [markdown]
# ## Measured: semsim's Tiny Shakespeare models
#
# The separator chapter's three models, with `make results-menu` (`tools/menu_study.py`), which writes
# `results/markov-order-shakespeare-cpu.json`; beside them the reference's GPT-2 and Pythia rows.

# %%
RESULTS = next(p/'results' for p in (Path.cwd(), *Path.cwd().parents) if (p/'results').is_dir())
mo_rec = json.loads((RESULTS/'markov-order-shakespeare-cpu.json').read_text())
NAMES = {'splm-vanilla': 'SPLM fixed-ξ (vanilla)', 'splm-em-ln': 'SPLM em_ln, γ 0.10', 'matched-gpt': 'MatchedGPT'}
rows = [{'model': NAMES[m], 'R̄1': r['R1'], 'R̄2': r['R2'], 'ρ12': r['rho12'], 'p12': r['p12'],
         '95% CI of R̄1−R̄2': f"[{r['ci_diff'][0]:.4g}, {r['ci_diff'][1]:.4g}]", 'decision': r['decision'], 'quadruples': r['n_quadruples']}
        for m, r in mo_rec['models'].items()]
rows += [{'model': 'GPT-2 (reference)', 'R̄1': 2799.24, 'R̄2': 2860.15, 'ρ12': 0.9787, 'p12': 0.124, '95% CI of R̄1−R̄2': '[−123.1, −0.56]', 'decision': 'C'},
         {'model': 'Pythia-160M (reference)', 'R̄1': 282.16, 'R̄2': 286.44, 'ρ12': 0.9850, 'p12': 7.9e-7, 'decision': 'C'}]
pd.DataFrame(rows).set_index('model').astype(object).fillna('')

# %%
fig, ax = plt.subplots(figsize=(6.2, 2.8))
df = pd.DataFrame([{'model': r['model'], 'ρ12': r['ρ12'], 'source': 'semsim (here)' if 'reference' not in r['model'] else 'reference'} for r in rows])
sns.barplot(data=df, y='model', x='ρ12', hue='source', dodge=False, ax=ax)
ax.axvline(1.0, color='grey', lw=1); ax.axvline(1.20, color='C3', ls='--', lw=1, label='rejection threshold 1.20')
ax.set_xlim(0.9, 1.25); ax.set_ylabel(''); ax.legend(fontsize=7, loc='lower right'); ax.set_title('Markov-order test: ρ12 = R̄1 / R̄2')
fig.tight_layout(); plt.show()

# %% [markdown]
# ### GPT-2 and Pythia
#
# With the internet, the reference's rows are one command each:

# %%
#| eval: false
import subprocess
for hub in ('gpt2', 'EleutherAI/pythia-160m'):
    subprocess.run(['semsim', 'analyze', 'markov-order', '--model', hub, '--out', f"results/markov-order-{hub.split('/')[-1]}"], check=True)

# %% [markdown]
# All three models get decision C, as GPT-2 and Pythia did in the reference, and the SPLMs' ρ₁₂ lies in the range
# the reference measured on its SPLM checkpoints (1.003–1.038): a second past state adds nothing a kernel ridge
# can use to predict the next last-layer state, for the second-order SPLM as for the attention model. The test
# therefore does not separate the architectures.

# %%
rhos = {m: r['rho12'] for m, r in mo_rec['models'].items()}
print({NAMES[m]: round(v, 4) for m, v in rhos.items()})
test_eq([r['decision'] for r in mo_rec['models'].values()], ['C', 'C', 'C'])
assert all(0.95 < v < 1.05 for v in rhos.values()) and all(1.003 <= rhos[m] <= 1.038 for m in ('splm-vanilla', 'splm-em-ln'))
