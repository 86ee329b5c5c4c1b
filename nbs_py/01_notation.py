# %% [markdown]
# # Notation
#
# > One symbol, one meaning: the symbols every chapter shares, their code names, and how semsim separates the ones that the field's sources use twice.

# %% [markdown]
# The paper and the reference repository reuse a few letters: $L$ counts layers and names the Lagrangian, $T$ is a
# sequence length and a kinetic energy, $m$ is a mass and (in scripts) a model, and the potential's network sizes are
# called `v_hidden`, `v_depth` next to the velocity $v$. semsim fixes one meaning for each below; the chapters follow
# it, and say so where they depart from a source.
#
# ## Sizes and indices
#
# | symbol | code | meaning |
# |---|---|---|
# | $B$ | `B` | batch size (sequences) |
# | $T$ | `T` | sequence length (tokens); **never** a kinetic energy |
# | $t, s$ | `t`, `s` | token positions, $0 \le s \le t < T$ |
# | $V$ | `vocab_size`, `V` | vocabulary size (in shapes); $V$ with arguments, $V(h)$ or $V_\theta(\xi, h)$, is a potential |
# | $d$ | `d` | width of a hidden state $h$ (and of each context channel) |
# | $L$ | `L`, `n_layer` | number of layers = integration steps; **never** the Lagrangian |
# | $\ell$ | `l` | layer index, $0 \le \ell \le L$ |
# | $K$ | `xi_channels` | number of context channels ($\xi$ has shape (B, T, K, d)) |
# | $K_\text{mix}$ | `K_mix` | number of wells in the SQ3 mixture |
#
# ## Mechanics
#
# | symbol | code | meaning |
# |---|---|---|
# | $h$ | `h`, `positions` | hidden state = position of a token's particle, (…, d) |
# | $v$ | `v`, `velocities` | velocity $\dot h$ (in depth: $v_{\ell+1}$ is the step $h_{\ell+1} - h_\ell$ over $\Delta t$) |
# | $m$ | `m`, `masses` | semantic mass of a token, (…, 1); a function that takes a model names it `model` (short examples may abbreviate) |
# | $\gamma$ | `gamma` | damping rate |
# | $\Delta t$ | `dt` | step size |
# | $f$ | `f` | force $-\nabla_h V$ |
# | $E_\text{kin}$ | `kinetic_energy` | kinetic energy $\tfrac12 m\lVert v\rVert^2$ (the paper's $T$) |
# | $\mathcal L$ | `lagrangian` | the Lagrangian $E_\text{kin} - V$, and nothing else |
# | $H$ | `energy` | the energy (Hamiltonian) $E_\text{kin} + V$; the signature chapter's information content is $H^*$ |
# | $V_\theta(\xi, h)$ | `V_theta` | the SPLM's learned potential; its MLP's sizes are the config fields `v_hidden`, `v_depth` (the reference's names: *v* for $V$, not for velocity) |
# | $\xi$ | `xi` | the causal context of a token, a pool of the prefix's states |
#
# ## Learning
#
# | symbol | code | meaning |
# |---|---|---|
# | $z$ | `logits` | next-token scores, (B, T, V) |
# | $J$ | `loss` | a training objective: the cross-entropy $\mathrm{CE}$ plus any regulariser ($J = \mathrm{CE} + \lambda_V \overline{V^2}$); written $J$ so that $\mathcal L$ stays the Lagrangian |
# | $\eta_k$ | `lr_at(k, ...)` | learning rate at optimiser step $k$ |
# | $\theta$ | — | all trainable parameters |
#
# ## Where semsim renames a source's symbol
#
# - the kinetic energy: the paper's $T$ is $E_\text{kin}$ here (*Dynamics*);
# - the training loss: the reference's $\mathcal L$ is $J$ (or $\mathrm{CE}$ for the bare cross-entropy) here
#   (*Causal-LM plumbing*, *Training*);
# - the signature matrix $P$ keeps the paper's shape, $N$ particles × $L$ semantic dimensions, in its own chapter
#   (*Signature*), where no layer count appears; that chapter is the one place where $L$ is not a number of layers.
