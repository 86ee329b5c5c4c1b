# %% [markdown]
# # Quickstart
#
# > From text to a conservative-by-construction language model in a few minutes on a laptop: data, a potential well, an SPLM, its trajectory, a causality check, training and sampling.

# %% [markdown]
# [![Open in Colab](data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIxMTciIGhlaWdodD0iMjAiPjxyZWN0IHdpZHRoPSIxMTciIGhlaWdodD0iMjAiIHJ4PSIzIiBmaWxsPSIjNTU1Ii8+PHJlY3QgeD0iNDMiIHdpZHRoPSI3NCIgaGVpZ2h0PSIyMCIgcng9IjMiIGZpbGw9IiNmOWFiMDAiLz48dGV4dCB4PSI2IiB5PSIxNCIgZmlsbD0iI2ZmZiIgZm9udC1mYW1pbHk9IlZlcmRhbmEsc2Fucy1zZXJpZiIgZm9udC1zaXplPSIxMSI+T3BlbjwvdGV4dD48dGV4dCB4PSI0OSIgeT0iMTQiIGZpbGw9IiNmZmYiIGZvbnQtZmFtaWx5PSJWZXJkYW5hLHNhbnMtc2VyaWYiIGZvbnQtc2l6ZT0iMTEiPmluIENvbGFiPC90ZXh0Pjwvc3ZnPg==)](https://colab.research.google.com/github/semsim-dev/semsim/blob/main/nbs/tutorials/quickstart.ipynb)
#
# This tutorial is a tour of semsim in the order a reader meets the ideas: the data every model reads, the physics
# of a single particle in a bounded energy well, then a scalar-potential language model (SPLM) whose tokens move as
# such particles, trained for a minute on Tiny Shakespeare. Each step points to the chapter that derives it. On Colab
# the next cell installs semsim; everywhere else it does nothing.

# %%
import os, subprocess, sys

# %%
if 'google.colab' in sys.modules:  # install semsim on Colab only (the GPU runtime already has torch)
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'git+https://github.com/semsim-dev/semsim'], check=True)

# %%
import tempfile
import numpy as np
import torch
import matplotlib.pyplot as plt
from semsim.data import tokenize_corpus, gpt2_tokenizer, get_batch
from semsim.wells import GaussianWell
from semsim.dynamics import damped_euler_step, energy
from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.causal import causal_probe
from semsim.train import TrainConfig, make_config, train, read_log, plot_run, load_run, sample

# %% [markdown]
# ## 1. Tokens
#
# Tiny Shakespeare with the exact GPT-2 tokenizer, split as in the reference system: the last 5 % of the tokens are
# held out ([Data](../05_data.html)).

# %%
train_ids, val_ids = tokenize_corpus('tinyshakespeare')
tok = gpt2_tokenizer()
x, y = get_batch(train_ids, 2, 24, torch.Generator().manual_seed(0))
print(f'{len(train_ids):,} train and {len(val_ids):,} validation tokens; a window:')
print(repr(tok.decode(x[0])))

# %% [markdown]
# ## 2. A particle in a Gaussian well
#
# The framework's basic object is a particle of mass $m$ in a bounded attractive well
# $V(x) = m\upsilon^2(1 - e^{-\kappa^2 x^2})$ ([Energy wells](../11_wells.html)), moving under the damped
# semi-implicit Euler step that the SPLM uses: $v \leftarrow (v + \Delta t\, f/m)/(1 + \Delta t\,\gamma)$,
# $h \leftarrow h + \Delta t\, v$ ([Dynamics](../12_dynamics.html)). With damping $\gamma > 0$ the energy
# $H = \tfrac12 m v^2 + V$ falls until the particle rests at the bottom of the well.

# %%
well = GaussianWell(m=1.0, upsilon=1.0, kappa=1.0)
h, v = torch.tensor([1.2], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
path, H = [], []
for _ in range(200):
    h, v = damped_euler_step(h, v, well.force(h), 1.0, 0.1, 0.1)
    path.append(h.item()); H.append(energy(h, v, 1.0, lambda z: well.V(z, dim=-1)).item())
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].plot(path); ax[0].set(xlabel='step', ylabel='position x', title='damped motion in a Gaussian well')
ax[1].plot(H); ax[1].set(xlabel='step', ylabel='energy H', title='energy only falls (γ = 0.1)')
plt.tight_layout(); plt.show()
assert all(b <= a + 1e-12 for a, b in zip(H, H[1:])) and abs(path[-1]) < 0.1

# %% [markdown]
# ## 3. A scalar-potential language model
#
# An SPLM has no attention. Each token's state $h_t$ starts at its embedding plus position and moves for $L$ steps
# under one learned scalar energy $V_\theta(\xi_t, h_t)$, where $\xi_t$ summarises the prefix (here four causal EMA
# channels); the logits are $h_L E^\top$ ([SPLM](../22_splm.html)). `output_mechanics=True` returns the trajectory:
# positions, velocities, masses and the energy of every token at every step.

# %%
torch.manual_seed(0)
config = SPLMConfig.preset('multixi', vocab_size=tok.vocab_size, d=32, L=4, v_hidden=64, v_depth=2, max_len=64)
model = SPLMForCausalLM(config)
out = model(x, output_mechanics=True)
mech = out.mechanics
print('logits', tuple(out.logits.shape), '| trajectory', tuple(mech.positions.shape), '(L+1, B, T, d)')
plt.figure(figsize=(5, 3))
plt.plot(mech.energy[:, 0].detach().numpy(), color='C0', alpha=0.4)
plt.xlabel('integration step ℓ'); plt.ylabel('H = ½m‖v‖² + V'); plt.title('energy of each token along its flow (untrained)')
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 4. Causal by construction
#
# Every force is $-\partial V(\xi_t, h_t)/\partial h_t$ with $\xi$ built from detached states, so no token can see a
# later one. The probe ([Causality](../25_causal.html)) perturbs a token and checks that no earlier logit moves, and
# that no gradient flows from a later embedding to an earlier logit. The historical bug (`causal_force=False`) is
# flagged.

# %%
ok = causal_probe(model)
model.config.causal_force = False
leaky = causal_probe(model)
model.config.causal_force = True
print(f'causal model: passed={ok.passed}; with the historical leak: passed={leaky.passed}')
assert ok.passed and not leaky.passed

# %% [markdown]
# ## 5. Train and sample
#
# The trainer ([Training](../30_train.html)) runs the same loop from a laptop to a GPU. Here a very short CPU run with
# a compact vocabulary (only the token types Tiny Shakespeare uses: a CPU shortcut that deviates from the reference);
# `semsim train --preset shakespeare` is the reference recipe.

# %%
run = tempfile.mkdtemp()
cfg = make_config(model='splm-multixi', d=32, L=4, v_hidden=64, v_depth=2, max_len=64, batch_size=8, block_size=32,
                  compact_vocab=True, max_steps=60, lr=3e-3, warmup=10, eval_every=30, eval_iters=4, ckpt_every=60,
                  progress=False, out=run)
summary = train(cfg)
log = read_log(os.path.join(run, 'log.jsonl'))
plot_run(log, 'SPLM multi-ξ'); plt.legend(); plt.show()
print(f"val loss {log[-1]['val_loss']:.2f} at step {log[-1]['step']} (training loss at the first step: {log[0]['loss']:.2f})")
assert log[-1]['val_loss'] < log[0]['loss']

# %%
trained, codec, _ = load_run(run)
print(sample(trained, codec, 'ROMEO:', max_new_tokens=20, seed=0))
