# %% [markdown]
# # Signature
#
# > The signature matrix of a semantic property, its information content H* and feasibility ellipsoid S*, and the same quantities for a transformer's hidden-state trajectory.

# %%
#| default_exp signature

# %% [markdown]
# A semantic **property** is a cloud of $N$ **aspects**: points $r_i \in \mathbb{R}^L$ of a semantic space $\Sigma$,
# each with a mass $\mathfrak{m}_i \ge 0$ (the paper; semsimula-paper@eb95852: `companion_notes/STP_Loss_Is_An_Emergent_Property_Of_The_Energy_Landscape_Defined_By_Gaussian_Well_Potential.md`). This chapter turns that cloud into numbers that do not
# depend on where the cloud sits or how it is turned:
#
# 1. the **signature matrix** $P = M X$, the aspects' positions relative to their centre of mass;
# 2. its singular values $\sigma_1 \ge \dots \ge \sigma_n \ge 0$ and their entropy $H(P)$;
# 3. the **information content** $H^* = H(P)\,\sum_i \sigma_i$;
# 4. the **feasibility ellipsoid** $S^*$ whose semi-axes are the singular values rescaled so that their mean is $H^*$;
# 5. the **transformer correspondence**: a hidden-state trajectory $h_1, \dots, h_T$ is read as a property with $T$
#    aspects, uniformly weighted or weighted by the attention each token receives.
#
# All logarithms are natural (entropies in nats).

# %%
#| export
from __future__ import annotations
from fastcore.basics import patch
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import matplotlib.pyplot as plt

# %% [markdown]
# ## Inputs: NumPy or torch
#
# Every public function accepts a NumPy array or a torch tensor, computes in `float64` and returns the input's kind:
# NumPy in, NumPy out; a torch tensor keeps its floating dtype and device, and gradients flow through (so $H^*$ can be
# used as a differentiable regulariser). `to_float64` does the conversion and checks for NaN / inf, naming the first
# bad entry.

# %%
#| export
ArrayLike = Union[np.ndarray, Tensor]

def to_float64(x, # array-like input
               name:str='input', # its name, used in error messages
               finite:bool=True # refuse NaN and inf
              ) -> tuple: # (float64 tensor, function mapping results back to x's kind)
    "Convert `x` to a float64 tensor and return it with a function that restores `x`'s kind (NumPy or torch dtype)."
    if isinstance(x, Tensor):
        dt = x.dtype if x.is_floating_point() else torch.float64
        t, back = x.to(torch.float64), (lambda y: y.to(dtype=dt))
    else:
        t, back = torch.as_tensor(np.asarray(x, dtype=np.float64)), (lambda y: y.detach().cpu().numpy())
    if finite and t.numel() and not torch.isfinite(t).all():
        bad = tuple(int(i) for i in (~torch.isfinite(t)).nonzero()[0])
        raise ValueError(f"{name} contains NaN or inf (first at index {bad}: {t[bad].item()})")
    return t, back


# %% [markdown]
# ## The signature matrix
#
# With $X$ (`X`, shape $N\times L$) the absolute aspect positions and $\tilde m_i = \mathfrak{m}_i / \sum_j \mathfrak{m}_j$
# (`mt`) the **mass ratios**, the *mass-ratio centering matrix* $M$ (`M`, $N \times N$) is
#
# $$M_{ij} = \delta_{ij} - \tilde m_j, \qquad\text{i.e.}\qquad M = I - \mathbb{1}\,\tilde m^\top ,$$
#
# ($M_{ii} = 1 - \tilde m_i$, $M_{ij} = -\tilde m_j$ for $i \ne j$) and the **signature matrix** is $P = MX$ (`P`). Its rows
# are $p_i = r_i - r_c$, the positions relative to the **centre of mass** $r_c = \sum_j \tilde m_j r_j = X^\top \tilde m$
# (`rc`). With equal masses $M = I - \tfrac1N \mathbb{1}\mathbb{1}^\top$, the centering of PCA.
#
# Three exact identities follow from $\tilde m^\top \mathbb{1} = 1$, and are tested below:
# $M\mathbb{1} = 0$ (a translation of every aspect leaves $P$ unchanged), $M^2 = M$ (centering twice changes nothing)
# and $\tilde m^\top M = 0$ (the **mass-weighted rows of $P$ sum to zero**: $\sum_i \tilde m_i p_i = 0$).
#
# Masses only choose the centre: they do not weight the rows of $P$. An aspect of zero mass does not move $r_c$ but its
# row $r_i - r_c$ still enters the spectrum. Masses must be finite, non-negative and not all zero; $N \ge 2$.
#
# All functions here broadcast over leading batch axes: `X` may be $(\dots, N, L)$ with `masses` $(\dots, N)$.

# %%
#| export
def _mass_ratios(masses, N:int) -> Tensor:
    "Validated mass ratios m~ = m / sum(m), (..., N) float64."
    m, _ = to_float64(masses, 'masses')
    if m.ndim == 0 or m.shape[-1] != N:
        raise ValueError(f"masses must have shape (..., N) with N = {N} aspects, got {tuple(m.shape)}")
    if (m < 0).any(): raise ValueError(f"masses must be non-negative, got min {m.min().item():g}")
    tot = m.sum(-1, keepdim=True)
    if (tot <= 0).any(): raise ValueError("masses sum to zero: the centre of mass is undefined (give at least one aspect a positive mass)")
    return m / tot

def centering_matrix(masses, # aspect masses, (..., N), or an int N for equal masses
                    ) -> ArrayLike: # M = I - 1 m~^T, (..., N, N)
    "The mass-ratio centering matrix M with M_ij = delta_ij - m~_j."
    if isinstance(masses, int):
        if masses < 2: raise ValueError(f"a property needs at least 2 aspects, got N = {masses}")
        masses = np.ones(masses)
    m, back = to_float64(masses, 'masses')
    mt = _mass_ratios(m, m.shape[-1])
    N = mt.shape[-1]
    return back(torch.eye(N, dtype=torch.float64) - mt[..., None, :].expand(*mt.shape[:-1], N, N))


# %%
#| export
def _check_X(X, name:str='X') -> tuple:
    "Validated aspect positions as float64 (..., N, L) with N >= 2, plus the restore function."
    t, back = to_float64(X, name)
    if t.ndim < 2: raise ValueError(f"{name} must have shape (..., N, L) (aspects x semantic dimensions), got {tuple(t.shape)}")
    if t.shape[-2] < 2: raise ValueError(f"a property needs at least 2 aspects, got N = {t.shape[-2]} in {name} of shape {tuple(t.shape)}")
    if t.shape[-1] < 1: raise ValueError(f"{name} has no semantic dimensions (L = 0)")
    return t, back

def center_of_mass(X:ArrayLike, # absolute aspect positions, (..., N, L)
                   masses:Optional[ArrayLike]=None # aspect masses, (..., N); None for equal masses
                  ) -> ArrayLike: # r_c, (..., L)
    "The centre of mass r_c = sum_j m~_j r_j."
    t, back = _check_X(X)
    mt = _mass_ratios(torch.ones(t.shape[-2], dtype=torch.float64) if masses is None else masses, t.shape[-2])
    x0 = t[..., :1, :]
    return back(x0[..., 0, :] + (mt[..., :, None] * (t - x0)).sum(-2))

def signature_matrix(X:ArrayLike, # absolute aspect positions, (..., N, L)
                     masses:Optional[ArrayLike]=None # aspect masses, (..., N); None for equal masses
                    ) -> ArrayLike: # P = M X, rows p_i = r_i - r_c, (..., N, L)
    "The signature matrix P = M X of a property (rows relative to the centre of mass)."
    t, back = _check_X(X)
    mt = _mass_ratios(torch.ones(t.shape[-2], dtype=torch.float64) if masses is None else masses, t.shape[-2])
    Y = t - t[..., :1, :]  # M 1 = 0: shifting by any point first is exact and avoids cancellation (coincident aspects give P = 0 exactly)
    return back(Y - (mt[..., :, None] * Y).sum(-2, keepdim=True))


# %% [markdown]
# A small property in the plane: five aspects, one of them ten times heavier. The heavy aspect pulls the centre of
# mass (the cross) towards itself; the mass-weighted rows of $P$ sum to zero, the plain rows do not.

# %%
X5 = np.array([[0., 0.], [2., 0.5], [1., 2.], [-1., 1.5], [3., 2.5]])
m5 = np.array([1., 1., 1., 1., 10.])
P5 = signature_matrix(X5, m5)
print('centre of mass:', center_of_mass(X5, m5), ' equal-mass centre:', X5.mean(0))
print('sum_i m~_i p_i =', (m5/m5.sum()) @ P5, '   sum_i p_i =', P5.sum(0))

# %% [markdown]
# The identities of $M$, checked on random masses (including a zero mass) in a batch:

# %%
torch.manual_seed(0)
m = torch.rand(3, 6, dtype=torch.float64); m[0, 2] = 0.
X = torch.randn(3, 6, 4, dtype=torch.float64)
M = centering_matrix(m)
mt = m / m.sum(-1, keepdim=True)
test_eq(M.shape, (3, 6, 6))
torch.testing.assert_close(M @ M, M)                                              # idempotent
torch.testing.assert_close(M @ torch.ones(3, 6, 1, dtype=torch.float64), torch.zeros(3, 6, 1, dtype=torch.float64))  # M 1 = 0
torch.testing.assert_close((mt[:, None, :] @ M)[:, 0], torch.zeros(3, 6, dtype=torch.float64))            # m~^T M = 0
torch.testing.assert_close(signature_matrix(X, m), M @ X)                           # P = M X
torch.testing.assert_close((mt[..., None] * signature_matrix(X, m)).sum(-2), torch.zeros(3, 4, dtype=torch.float64))  # weighted rows sum to 0
torch.testing.assert_close(torch.diagonal(M, dim1=-2, dim2=-1), 1 - mt)              # M_ii = 1 - m~_i
torch.testing.assert_close(centering_matrix(4), torch.eye(4, dtype=torch.float64).numpy() - 1/4)  # equal masses: I - 11^T/N
# the zero-mass aspect does not move the centre, but its row is still its offset from the centre
X2 = X.clone(); X2[0, 2] += 5.
torch.testing.assert_close(center_of_mass(X2[0], m[0]), center_of_mass(X[0], m[0]))
torch.testing.assert_close(signature_matrix(X2[0], m[0])[2], X2[0, 2] - center_of_mass(X[0], m[0]))


# %% [markdown]
# ## Spectrum, entropy and information content
#
# The SVD $P = U_P \Sigma_P V_P^\top$ (`signature_svd`) gives singular values $\sigma_1 \ge \dots \ge \sigma_n \ge 0$,
# $n = \min(N, L)$ (`sigma`); the columns of $V_P$ are the **principal semantic axes**. The normalised spectrum
# (`normalized_spectrum`) and its entropy (`signature_entropy`) are
#
# $$\hat\sigma_i = \frac{\sigma_i^2}{\sum_j \sigma_j^2}, \qquad H(P) = -\sum_i \hat\sigma_i \log \hat\sigma_i
# \quad (0 \log 0 = 0),$$
#
# and the **information content** (`information_content`) is $H^* = H(P) \cdot \sum_i \sigma_i$ (`H_star`).
# $H(P)$ measures how many directions the property spreads over ($0 \le H \le \log k$, with $k$ the rank of $P$: zero for
# collinear aspects, $\log k$ when all $k$ non-zero singular values are equal); $\sum_i \sigma_i$ (the nuclear norm of $P$)
# measures how far it spreads. Consequences, tested below:
#
# - $H^*$ is **invariant** under translation ($P$ does not change), rotation and reflection $X \to XR$ ($P \to PR$, same
#   singular values) and a relabelling of the aspects together with their masses; it is **homogeneous of degree one**
#   in scale, $H^*(cX) = |c|\,H^*(X)$.
# - By Noether-like bookkeeping, its gradient $G = \partial H^*/\partial X$ has zero column sums ($\mathbb{1}^\top G = 0$,
#   translation) and $X^\top G$ is symmetric (rotation).
# - **Documented limits**: a **collinear** property, in particular any property with **two aspects**, has $k = 1$, so
#   $H = 0$ and $H^* = 0$. When **all aspects coincide** $P = 0$, $\hat\sigma$ is $0/0$ and `signature_entropy` raises;
#   `information_content` returns the limit $H^* = 0$ (since $0 \le H \le \log n$ while $\sum\sigma \to 0$).

# %%
#| export
class SignatureSVD(NamedTuple):
    "Thin SVD of a signature matrix, P = U diag(sigma) Vh, singular values descending."
    U: ArrayLike      # left singular vectors, (..., N, n), n = min(N, L)
    sigma: ArrayLike  # singular values, descending, (..., n)
    Vh: ArrayLike     # principal semantic axes as rows, (..., n, L)

def _check_P(P) -> tuple:
    t, back = to_float64(P, 'P')
    if t.ndim < 2: raise ValueError(f"P must have shape (..., N, L), got {tuple(t.shape)}")
    if t.shape[-2] < 2: raise ValueError(f"a property needs at least 2 aspects, got N = {t.shape[-2]}")
    return t, back

def signature_svd(P:ArrayLike, # signature matrix, (..., N, L)
                 ) -> SignatureSVD: # U (..., N, n), sigma (..., n), Vh (..., n, L)
    "Thin SVD of the signature matrix; the rows of `Vh` are the principal semantic axes."
    t, back = _check_P(P)
    U, S, Vh = torch.linalg.svd(t, full_matrices=False)
    return SignatureSVD(back(U), back(S), back(Vh))

def _sigma(P) -> tuple:
    t, back = _check_P(P)
    return torch.linalg.svdvals(t), back

def _coincident_error(s2sum:Tensor):
    bad = (s2sum == 0).nonzero()
    where = f" (batch index {tuple(int(i) for i in bad[0])})" if s2sum.ndim and len(bad) else ''
    raise ValueError(f"all aspects coincide (P = 0){where}: the normalised spectrum is 0/0 and H(P) is undefined; "
                     "information_content returns the limit H* = 0")

def normalized_spectrum(P:ArrayLike, # signature matrix, (..., N, L)
                       ) -> ArrayLike: # sigma_i^2 / sum_j sigma_j^2, (..., n)
    "The normalised spectrum sigma^_i = sigma_i^2 / sum_j sigma_j^2 (sums to one)."
    s, back = _sigma(P)
    s2 = s**2; tot = s2.sum(-1, keepdim=True)
    if (tot == 0).any(): _coincident_error(tot[..., 0])
    return back(s2 / tot)

# %%
#| export
def _entropy(s:Tensor) -> Tensor:
    "Entropy of the normalised spectrum of singular values `s` (..., n); NaN where all are zero."
    s2 = s**2
    r = s2 / s2.sum(-1, keepdim=True)
    return -torch.xlogy(r, r).sum(-1)

def signature_entropy(P:ArrayLike, # signature matrix, (..., N, L)
                     ) -> ArrayLike: # H(P) in nats, (...)
    "Spectral entropy H(P) = -sum_i sigma^_i log sigma^_i of the signature matrix."
    s, back = _sigma(P)
    tot = (s**2).sum(-1)
    if (tot == 0).any(): _coincident_error(tot)
    return back(_entropy(s))

def information_content(P:ArrayLike, # signature matrix, (..., N, L)
                       ) -> ArrayLike: # H* = H(P) * sum_i sigma_i, (...); 0 where all aspects coincide
    "Information content H* = H(P) * sum_i sigma_i of a property."
    s, back = _sigma(P)
    tot = (s**2).sum(-1)
    H = torch.where(tot > 0, _entropy(torch.where(tot[..., None] > 0, s, torch.ones_like(s))), torch.zeros_like(tot))
    return back(H * s.sum(-1))

# %% [markdown]
# The five-aspect property above: two principal semantic axes, a spectrum tilted towards the first.

# %%
svd5 = signature_svd(P5)
print('sigma =', svd5.sigma.round(4), ' sigma^ =', normalized_spectrum(P5).round(4))
print(f'H(P) = {signature_entropy(P5):.4f} nats (max log 2 = {math.log(2):.4f}),  H* = {information_content(P5):.4f}')
torch.testing.assert_close(torch.tensor(svd5.U * svd5.sigma[None] @ svd5.Vh), torch.tensor(P5))

# %% [markdown]
# ### Closed forms on hand-made properties
#
# - **Square** $(\pm a, \pm a)$, equal masses: $P^\top P = 4a^2 I$, so $\sigma = (2a, 2a)$, $H = \log 2$, $H^* = 4a\log 2$.
# - **Rectangle** $(\pm a, \pm b)$: $\sigma = (2a, 2b)$, $\hat\sigma = (a^2, b^2)/(a^2+b^2)$, $H^* = 2(a+b)\,H(\hat\sigma)$.
# - **Simplex**: the $N$ unit vectors $e_i \in \mathbb{R}^N$, equal masses: $P = I - \tfrac1N\mathbb{1}\mathbb{1}^\top$
#   is a projector of rank $N-1$, so $\sigma = (1, \dots, 1, 0)$, $H = \log(N-1)$ and $H^* = (N-1)\log(N-1)$.
# - **Two aspects** at distance $d$ with masses $\mathfrak{m}_1, \mathfrak{m}_2$: $p_1 = -\tilde m_2 d\,e$,
#   $p_2 = \tilde m_1 d\,e$, so $\sigma_1 = d\sqrt{\tilde m_1^2 + \tilde m_2^2}$ and $H = H^* = 0$.

# %%
a, b = 1.5, 0.5
sq = np.array([[a, a], [a, -a], [-a, a], [-a, -a]])
test_close(signature_svd(signature_matrix(sq)).sigma, [2*a, 2*a], eps=1e-12)
test_close(signature_entropy(signature_matrix(sq)), math.log(2), eps=1e-12)
test_close(information_content(signature_matrix(sq)), 4*a*math.log(2), eps=1e-12)

rect = np.array([[a, b], [a, -b], [-a, b], [-a, -b]])
sh = np.array([a*a, b*b]) / (a*a + b*b)
test_close(signature_svd(signature_matrix(rect)).sigma, [2*a, 2*b], eps=1e-12)
test_close(information_content(signature_matrix(rect)), 2*(a + b) * -(sh*np.log(sh)).sum(), eps=1e-12)

for N in (3, 5, 8):
    Ps = signature_matrix(np.eye(N))
    test_close(signature_svd(Ps).sigma, [1.]*(N-1) + [0.], eps=1e-12)
    test_close(information_content(Ps), (N-1)*math.log(N-1), eps=1e-12)

d, m2 = 3., np.array([1., 3.])
P2 = signature_matrix(np.array([[0., 0., 0.], [d, 0., 0.]]), m2)
mt2 = m2 / m2.sum()
test_close(P2[:, 0], [-mt2[1]*d, mt2[0]*d], eps=1e-12)
test_close(signature_svd(P2).sigma[0], d*math.sqrt((mt2**2).sum()), eps=1e-12)
test_close([signature_entropy(P2), information_content(P2)], [0., 0.], eps=1e-14)

# %% [markdown]
# ### Invariances
#
# On random properties in a batch: translation, a random orthogonal $R$ (a rotation or reflection from the QR
# decomposition of a Gaussian matrix), a permutation of aspects with their masses, and scaling by $c = -2.5$.

# %%
torch.manual_seed(1)
B, N, L = 4, 7, 5
X = torch.randn(B, N, L, dtype=torch.float64) * torch.rand(B, 1, L, dtype=torch.float64) * 3
m = torch.rand(B, N, dtype=torch.float64) + 0.1
H0 = information_content(signature_matrix(X, m))
R, _ = torch.linalg.qr(torch.randn(B, L, L, dtype=torch.float64))
shift = 100 * torch.randn(B, 1, L, dtype=torch.float64)
perm = torch.randperm(N)
torch.testing.assert_close(information_content(signature_matrix(X + shift, m)), H0)
torch.testing.assert_close(information_content(signature_matrix(X @ R, m)), H0)
torch.testing.assert_close(information_content(signature_matrix(X[:, perm], m[:, perm])), H0)
torch.testing.assert_close(information_content(signature_matrix(-2.5 * X, m)), 2.5 * H0)
torch.testing.assert_close(information_content(signature_matrix(X, 7 * m)), H0)   # only mass ratios matter
test_eq(H0.shape, (B,))
print('H* of the four random properties:', H0.numpy().round(4))

# %% [markdown]
# The gradient of $H^*$ with respect to the positions carries the same invariances as exact identities:
# $\mathbb{1}^\top G = 0$ and $X^\top G = G^\top X$.

# %%
torch.manual_seed(2)
X = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
m = torch.rand(6, dtype=torch.float64) + 0.2
G, = torch.autograd.grad(information_content(signature_matrix(X, m)), X)
torch.testing.assert_close(G.sum(0), torch.zeros(4, dtype=torch.float64))
torch.testing.assert_close(X.detach().T @ G, G.T @ X.detach())
# ... and agrees with central finite differences
i, j, h = 3, 1, 1e-6
Xp, Xm = X.detach().clone(), X.detach().clone(); Xp[i, j] += h; Xm[i, j] -= h
fd = (information_content(signature_matrix(Xp, m)) - information_content(signature_matrix(Xm, m))) / (2*h)
test_close(fd.item(), G[i, j].item(), eps=1e-7)

# %% [markdown]
# ### Degenerate inputs
#
# One aspect, all-coincident aspects, zero or negative masses, NaN, and the wrong number of axes fail with a message
# naming the problem, or return the documented limit.

# %%
test_fail(lambda: signature_matrix(np.ones((1, 3))), contains='at least 2 aspects')
test_fail(lambda: signature_matrix(np.ones(3)), contains='shape (..., N, L)')
test_fail(lambda: signature_matrix(np.ones((3, 2)), masses=np.zeros(3)), contains='masses sum to zero')
test_fail(lambda: signature_matrix(np.ones((3, 2)), masses=np.array([1., -1., 2.])), contains='non-negative')
test_fail(lambda: signature_matrix(np.ones((3, 2)), masses=np.ones(4)), contains='N = 3 aspects')
test_fail(lambda: signature_matrix(np.array([[0., 1.], [np.nan, 2.]])), contains='NaN or inf (first at index (1, 0)')
test_fail(lambda: signature_matrix(np.ones((3, 2)), masses=np.array([1., np.inf, 1.])), contains='masses contains NaN or inf')
test_fail(lambda: centering_matrix(1), contains='at least 2 aspects')
coincident = np.tile([[1.7, -0.3, 2.2]], (4, 1))
Pc = signature_matrix(coincident, np.array([1., 2., 3., 4.]))
test_eq(np.abs(Pc).max(), 0.)                        # exactly zero, not rounding noise
test_fail(lambda: signature_entropy(Pc), contains='all aspects coincide')
test_fail(lambda: normalized_spectrum(Pc), contains='all aspects coincide')
test_eq(information_content(Pc), 0.)                  # the documented limit
# in a batch the coincident entry gets 0 and the others their usual value
Xb = np.stack([coincident, np.c_[sq, np.zeros(4)]])
test_close(information_content(signature_matrix(Xb)), [0., 4*a*math.log(2)], eps=1e-12)
test_fail(lambda: signature_entropy(signature_matrix(Xb)), contains='batch index (0,)')

# %% [markdown]
# NumPy in gives NumPy out; a torch tensor keeps its dtype.

# %%
assert isinstance(information_content(signature_matrix(X5)), np.ndarray)
test_eq(signature_matrix(torch.tensor(X5, dtype=torch.float32)).dtype, torch.float32)
test_eq(information_content(torch.tensor(P5, dtype=torch.float32)).dtype, torch.float32)


# %% [markdown]
# ## The feasibility ellipsoid $S^*$
#
# The reference defines $S^*$ by $k$ non-zero *scaled* singular values $\sigma^*_1, \dots, \sigma^*_k$ (`semi_axes`):
#
# $$S^* = \Big\{\varsigma \in \mathbb{R}^k : \sum_{i \le k} (\varsigma_i / \sigma^*_i)^2 \le 1\Big\}
# \quad\text{subject to}\quad \frac{\sigma^*_1 + \dots + \sigma^*_k}{k} = H^*,$$
#
# where $\varsigma_i$ (`s`) is a coordinate along the $i$-th principal semantic axis, and feasible in-situ positions also
# lie on the **sphere** $\sum_i \varsigma_i^2 = (H^*)^2$. The exact scaling rule is in a manuscript the reference does
# not summarise, so **semsim chooses** the simplest rule that meets the constraint and keeps the shape of the
# property:
#
# $$\sigma^*_i = \sigma_i \cdot \frac{k\,H^*}{\sum_{j \le k} \sigma_j} = k\,H(P)\,\sigma_i ,$$
#
# with $k$ the numerical rank of $P$ (singular values above `rtol`$\cdot\sigma_1$). The second form follows from
# $H^* = H(P)\sum_j\sigma_j$. Its consequences, each tested below:
#
# 1. **mean** $\frac1k\sum_i\sigma^*_i = H^*$ exactly, and the ratios $\sigma^*_i/\sigma^*_j = \sigma_i/\sigma_j$ are the
#    property's own;
# 2. **the sphere crosses the ellipsoid**: the largest semi-axis is at least the mean and the smallest at most the mean,
#    $\sigma^*_1 \ge H^* \ge \sigma^*_k$. So the poles $\pm H^* e_1$ are always feasible (in $S^*$ and on the sphere), the
#    points $\pm H^* e_k$ are never strictly inside, and the whole sphere is feasible only when the property is
#    **isotropic** ($\sigma_1 = \dots = \sigma_k$, i.e. $H = \log k$);
# 3. **volume**: $\mathrm{vol}(S^*) = \omega_k \prod_i \sigma^*_i \le \omega_k (H^*)^k$, the volume of the ball bounded by
#    the sphere (arithmetic–geometric mean inequality), with equality only when isotropic;
# 4. **feasible fraction in the plane** ($k = 2$, semi-axes $a \ge R = H^* \ge b$): the point $R(\cos\varphi, \sin\varphi)$
#    is in $S^*$ iff $\cos^2\varphi \ge c = \frac{b^{-2} - R^{-2}}{b^{-2} - a^{-2}}$, so the feasible fraction of the circle
#    is $\frac{2}{\pi}\arccos\sqrt{c}$;
# 5. **collinear limit**: $k = 1$ gives $H = 0$, so $\sigma^*_1 = 0$ and $S^*$ (and the sphere) shrink to the origin.
#
# The transformer correspondence below reads $\sigma^*_i \leftrightarrow \sigma_{H,i}$ and
# $\lVert\tilde H\rVert_F^2 \leftrightarrow (H^*)^2$; it is interpretive only.

# %%
#| export
@dataclass
class FeasibilityEllipsoid:
    "The feasibility ellipsoid S* of one property: semi-axes sigma*_i = k H(P) sigma_i (mean H*) and the sphere |s| = H*."
    semi_axes: Tensor  # sigma*_1 >= ... >= sigma*_k, (k,)
    H_star: float      # information content, the sphere's radius and the semi-axes' mean
    sigma: Tensor      # the k non-zero singular values of P, (k,)
    axes: Tensor       # principal semantic axes as rows, (k, L)
    @property
    def k(self) -> int: return len(self.semi_axes)


# %%
#| export
@patch
def _s(self:FeasibilityEllipsoid, s) -> Tensor:
    t, _ = to_float64(s, 's')
    if t.ndim == 0 or t.shape[-1] != self.k:
        raise ValueError(f"points must have shape (..., k) with k = {self.k} principal coordinates, got {tuple(t.shape)}")
    return t

@patch
def level(self:FeasibilityEllipsoid, s:ArrayLike, # points in principal coordinates, (..., k)
         ) -> Tensor: # sum_i (s_i / sigma*_i)^2, (...); inf off a degenerate (zero) axis
    "The ellipsoid's quadratic form: <= 1 inside S*."
    t = self._s(s); a = self.semi_axes
    q = torch.where(a > 0, t / torch.where(a > 0, a, torch.ones_like(a)), torch.where(t == 0, 0., math.inf))
    return (q**2).sum(-1)

@patch
def contains(self:FeasibilityEllipsoid, s:ArrayLike, # points, (..., k)
             tol:float=1e-12) -> Tensor: # bool, (...)
    "Membership in S*: level(s) <= 1 + tol."
    return self.level(s) <= 1 + tol

@patch
def on_sphere(self:FeasibilityEllipsoid, s:ArrayLike, # points, (..., k)
              tol:float=1e-9) -> Tensor: # bool, (...)
    "On the sphere sum_i s_i^2 = (H*)^2, within a relative tolerance `tol` (absolute when H* = 0)."
    r = self._s(s).norm(dim=-1)
    return (r - self.H_star).abs() <= tol * max(self.H_star, 1.)

@patch
def feasible(self:FeasibilityEllipsoid, s:ArrayLike, tol:float=1e-9) -> Tensor: # points, (..., k) -> bool, (...)
    "Feasible in-situ positions: on the sphere and inside S*."
    return self.on_sphere(s, tol) & self.contains(s, tol)


# %%
#| export
@patch
def feasible_fraction(self:FeasibilityEllipsoid, n:int=200_000, # Monte Carlo samples on the sphere
                      seed:int=0) -> float: # fraction of the sphere inside S*
    "Monte Carlo estimate of the fraction of the sphere |s| = H* that lies inside S*."
    if self.H_star == 0: return 1.0
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, self.k, generator=g, dtype=torch.float64)
    return self.contains(self.H_star * u / u.norm(dim=-1, keepdim=True)).double().mean().item()


# %%
#| export
def feasibility_ellipsoid(P:ArrayLike, # signature matrix of one property, (N, L)
                          rtol:float=1e-9 # singular values <= rtol * sigma_1 count as zero
                         ) -> FeasibilityEllipsoid:
    "The feasibility ellipsoid S* of a property, with semsim's scaling rule sigma*_i = k H(P) sigma_i."
    t, _ = _check_P(P)
    if t.ndim != 2: raise ValueError(f"feasibility_ellipsoid takes one property, P of shape (N, L); got {tuple(t.shape)}")
    U, S, Vh = torch.linalg.svd(t, full_matrices=False)
    if S[0] == 0: raise ValueError("all aspects coincide (P = 0): S* has no axes (k = 0)")
    k = int((S > rtol * S[0]).sum())
    s, H = S[:k], _entropy(S[:k])
    H_star = float(H * s.sum())
    return FeasibilityEllipsoid(semi_axes=k * H * s, H_star=H_star, sigma=s, axes=Vh[:k])

# %% [markdown]
# A picture in the plane: the five-aspect property (left) with its principal semantic axes drawn from the centre of
# mass, scaled by $\sigma_i$; and (right) its $S^*$ with the sphere (here a circle) of radius $H^*$. The feasible
# positions are the arcs of the circle inside the ellipse, around the poles $\pm H^* e_1$.

# %%
E5 = feasibility_ellipsoid(P5)
rc5 = center_of_mass(X5, m5)
fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
ax[0].scatter(X5[:, 0], X5[:, 1], s=30 + 12*m5, c='C0', zorder=3)
ax[0].plot(*rc5, 'kx', ms=10, mew=2, label='centre of mass $r_c$')
for i in range(2):
    v = E5.axes[i].numpy() * E5.sigma[i].item() / 2
    ax[0].plot(*np.stack([rc5 - v, rc5 + v]).T, color=f'C{i+1}', lw=2, label=f'principal axis {i+1}, length $\\sigma_{i+1}$')
ax[0].set(aspect='equal', title='aspects (size ~ mass) and principal axes', xlabel='$r_1$', ylabel='$r_2$'); ax[0].legend(loc='upper left', fontsize=8)
phi = np.linspace(0, 2*np.pi, 721)
A, Bm = E5.semi_axes.numpy()
ax[1].plot(A*np.cos(phi), Bm*np.sin(phi), 'C0', label=f'$S^*$: semi-axes {A:.2f}, {Bm:.2f}')
circ = E5.H_star * np.stack([np.cos(phi), np.sin(phi)], -1)
ax[1].plot(*circ.T, 'C7', ls='--', label=f'sphere $|\\varsigma| = H^* = {E5.H_star:.2f}$')
ok = E5.contains(circ).numpy()
ax[1].scatter(*circ[ok].T, s=4, c='C3', label='feasible')
ax[1].set(aspect='equal', title='feasibility ellipsoid $S^*$', xlabel=r'$\varsigma_1$', ylabel=r'$\varsigma_2$'); ax[1].legend(fontsize=8, loc='lower right')
plt.tight_layout(); plt.show()
print(f'feasible fraction of the circle: {E5.feasible_fraction():.4f}')

# %% [markdown]
# The five consequences of the scaling rule, on random properties of rank 2 to 5 (and the closed-form feasible fraction
# in the plane against Monte Carlo):

# %%
torch.manual_seed(3)
for k_true in (2, 3, 5):
    X = torch.randn(9, k_true, dtype=torch.float64) * torch.linspace(2, 0.5, k_true, dtype=torch.float64)
    X = X @ torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0][:k_true]   # embed in L = 6 dimensions
    E = feasibility_ellipsoid(signature_matrix(X, torch.rand(9, dtype=torch.float64) + 0.1))
    test_eq(E.k, k_true)                                                              # numerical rank
    test_close(E.semi_axes.mean().item(), E.H_star, eps=1e-10)                        # 1. mean = H*
    torch.testing.assert_close(E.semi_axes / E.semi_axes[0], E.sigma / E.sigma[0])    # 1. shape kept
    assert E.semi_axes[0] >= E.H_star >= E.semi_axes[-1]                               # 2. sphere crosses
    e = torch.eye(E.k, dtype=torch.float64)
    assert E.feasible(E.H_star * e[0]) and E.feasible(-E.H_star * e[0])               # 2. poles feasible
    assert E.level(E.H_star * e[-1]) >= 1                                              # 2. never strictly inside
    assert E.semi_axes.prod() <= E.H_star ** E.k                                       # 3. volume <= ball
    if E.k == 2:                                                                       # 4. planar closed form
        A, Bm, R = E.semi_axes[0].item(), E.semi_axes[1].item(), E.H_star
        c = (Bm**-2 - R**-2) / (Bm**-2 - A**-2)
        test_close(E.feasible_fraction(400_000), 2/math.pi * math.acos(math.sqrt(c)), eps=3e-3)

# isotropic: the square. All of the sphere is feasible, volume equals the ball's
Esq = feasibility_ellipsoid(signature_matrix(sq))
torch.testing.assert_close(Esq.semi_axes, torch.full((2,), Esq.H_star, dtype=torch.float64))
test_eq(Esq.feasible_fraction(), 1.0)
# 5. collinear: k = 1, H* = 0, S* is the origin
E2 = feasibility_ellipsoid(P2)
test_eq((E2.k, E2.H_star, E2.semi_axes.item()), (1, 0., 0.))
assert E2.feasible(np.zeros(1)) and not E2.contains(np.array([1e-9]))
test_fail(lambda: feasibility_ellipsoid(Pc), contains='all aspects coincide')
test_fail(lambda: feasibility_ellipsoid(signature_matrix(Xb)), contains='one property')
test_fail(lambda: E5.contains(np.zeros(3)), contains='k = 2')


# %% [markdown]
# ## The transformer correspondence
#
# A transformer's hidden states at one layer, $h_1, \dots, h_T \in \mathbb{R}^d$ (`H`, shape $T \times d$), are read as a
# property with $T$ aspects (the paper; semsimula-paper@eb95852: `companion_notes/STP_Loss_Is_An_Emergent_Property_Of_The_Energy_Landscape_Defined_By_Gaussian_Well_Potential.md`, conjectural, used for interpretation only). Centering gives
# $\tilde H = H - \mathbb{1}\bar h^\top$ (`Ht`), the signature matrix with equal masses, and with its singular values
# $\sigma_{H,i}$ (`sigma`):
#
# $$r_i = \frac{\sigma_{H,i}^2}{\sum_j \sigma_{H,j}^2}, \qquad H_\text{PCA} = -\sum_i r_i \log r_i, \qquad
# H^*_\text{PCA} = H_\text{PCA} \sum_i \sigma_{H,i},$$
#
# (`r`, `H_pca`, `H_star`), and $\lVert \tilde H \rVert_F^2 = \sum_i \sigma_{H,i}^2$ (`frob2`) plays the role of $(H^*)^2$.
# The **attention-weighted variant** replaces the uniform centering by $M_w$, the mass-ratio centering matrix with masses
# $w_t$ (`w`), the **aggregate attention received** by token $t$ (§1.5):
#
# $$w_t = \sum_{\text{heads}} \sum_{q} A_{q \to t},$$
#
# `attention_received(A)` for attention probabilities `A` of shape $(\dots, n_\text{heads}, T, T)$ (query $\times$ key,
# rows summing to one). Each row sums to one, so $\sum_t w_t = n_\text{heads}\,T$. The reference turns $w$ into a
# per-token mass by averaging over layers and clipping at $10^{-3}$.

# %%
#| export
class TrajectorySignature(NamedTuple):
    "Signature quantities of a hidden-state trajectory (the paper; semsimula-paper@eb95852: `companion_notes/STP_Loss_Is_An_Emergent_Property_Of_The_Energy_Landscape_Defined_By_Gaussian_Well_Potential.md`, transformer correspondence)."
    Ht: ArrayLike      # centred trajectory H - 1 h_bar^T (or M_w H), (..., T, d)
    sigma: ArrayLike   # singular values of Ht, descending, (..., n), n = min(T, d)
    r: ArrayLike       # normalised spectrum sigma_i^2 / sum_j sigma_j^2, (..., n)
    H_pca: ArrayLike   # spectral entropy, (...)
    H_star: ArrayLike  # H_pca * sum_i sigma_i, (...)
    frob2: ArrayLike   # |Ht|_F^2 = sum_i sigma_i^2, (...)

def trajectory_signature(H:ArrayLike, # hidden-state trajectory, (..., T, d)
                         w:Optional[ArrayLike]=None # per-token weights (attention received), (..., T); None: uniform
                        ) -> TrajectorySignature:
    "Centre a T x d trajectory (uniformly or with weights w) and return its spectrum, entropy and information content."
    t, back = to_float64(H, 'H')
    if t.ndim < 2: raise ValueError(f"H must have shape (..., T, d), got {tuple(t.shape)}")
    Ht = signature_matrix(t, w)
    s = torch.linalg.svdvals(Ht)
    s2 = s**2; tot = s2.sum(-1)
    if (tot == 0).any(): _coincident_error(tot)
    r = s2 / tot[..., None]
    Hp = -torch.xlogy(r, r).sum(-1)
    return TrajectorySignature(back(Ht), back(s), back(r), back(Hp), back(Hp * s.sum(-1)), back(tot))

def attention_received(A:ArrayLike, # attention probabilities, (..., heads, T, T), query x key
                      ) -> ArrayLike: # w_t = sum_heads sum_queries A[q -> t], (..., T)
    "Aggregate attention received by each token, summed over heads and queries."
    t, back = to_float64(A, 'A')
    if t.ndim < 3 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"A must have shape (..., heads, T, T) (query x key), got {tuple(t.shape)}")
    if (t < 0).any(): raise ValueError(f"attention probabilities must be non-negative, got min {t.min().item():g}")
    return back(t.sum(dim=(-3, -2)))


# %% [markdown]
# Two synthetic trajectories with $T = 64$ tokens in $d = 16$ dimensions: isotropic noise, and a random walk
# $h_t = \sum_{s \le t} \epsilon_s$. The random walk is dominated by a few slow directions (more than half of its
# variance lies along the first principal axis), so its spectral entropy is far below that of the noise. The attention weights come from a random causal 4-head attention pattern; the early tokens
# receive the most attention (every later query can see them), which moves the centre towards the start of the walk.

# %%
g = torch.Generator().manual_seed(4)
T, d, n_heads = 64, 16, 4
eps_ = torch.randn(T, d, generator=g, dtype=torch.float64)
walk = eps_.cumsum(0)
scores = torch.randn(n_heads, T, T, generator=g, dtype=torch.float64)
A = torch.softmax(scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf), -1)
w = attention_received(A)
sig = {'noise': trajectory_signature(eps_), 'random walk': trajectory_signature(walk),
       'random walk, attention-weighted': trajectory_signature(walk, w)}
fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
for i, (name, ts) in enumerate(sig.items()):
    ax[0].semilogy(np.arange(1, d + 1), ts.r.numpy(), 'o-', ms=3, label=f'{name}: $H_{{PCA}}$ = {ts.H_pca:.2f}')
ax[0].set(xlabel='component i', ylabel='$r_i$', title='normalised spectrum of the centred trajectory'); ax[0].legend(fontsize=8)
ax[1].bar(np.arange(T), w.numpy()); ax[1].axhline(n_heads, color='k', lw=0.8, ls='--')
ax[1].set(xlabel='token t', ylabel='$w_t$', title='aggregate attention received (causal, 4 heads)')
plt.tight_layout(); plt.show()
for name, ts in sig.items(): print(f'{name:32s} H_PCA = {ts.H_pca:.3f}  H*_PCA = {ts.H_star:8.2f}  |Ht|_F^2 = {ts.frob2:9.1f}')

# %% [markdown]
# The claims of the last paragraph, and the correspondence's identities: $\lVert\tilde H\rVert_F^2 = \sum\sigma^2$,
# $\sum_t w_t = n_\text{heads}T$, uniform weights equal the unweighted variant, only the ratios of $w$ matter, and
# concentrating all weight on one token makes that token the centre (its row of $\tilde H$ vanishes).

# %%
assert sig['random walk'].H_pca < sig['noise'].H_pca - 1
assert sig['random walk'].r[0] > 0.5 > 0.2 > sig['noise'].r[0]
test_close(sig['random walk'].frob2.item(), (walk - walk.mean(0)).pow(2).sum().item(), eps=1e-8)
torch.testing.assert_close(sig['noise'].frob2, (sig['noise'].sigma**2).sum())
test_close(w.sum().item(), n_heads * T, eps=1e-9)
assert w[:8].mean() > w[-8:].mean()
h0 = walk[0]
assert (center_of_mass(walk, w) - h0).norm() < (walk.mean(0) - h0).norm()   # the weighted centre sits nearer the start
ts_u = trajectory_signature(walk, torch.ones(T, dtype=torch.float64))
torch.testing.assert_close(ts_u.H_star, sig['random walk'].H_star)
torch.testing.assert_close(trajectory_signature(walk, 3 * w).H_star, sig['random walk, attention-weighted'].H_star)
one = torch.zeros(T, dtype=torch.float64); one[10] = 1.
test_eq(trajectory_signature(walk, one).Ht[10].abs().max().item(), 0.)
# the trajectory quantities are the property quantities with T aspects
test_close(sig['random walk'].H_star.item(), information_content(signature_matrix(walk)).item(), eps=1e-9)
# batched over (B, T, d), with (B, T) weights
Bw = trajectory_signature(torch.stack([eps_, walk]), torch.stack([w, w]))
test_eq(Bw.r.shape, (2, d))
test_close(Bw.H_star[1].item(), sig['random walk, attention-weighted'].H_star.item(), eps=1e-9)
test_fail(lambda: attention_received(torch.ones(3, 4, 5)), contains='(..., heads, T, T)')
test_fail(lambda: attention_received(-A), contains='non-negative')
test_fail(lambda: trajectory_signature(walk, torch.zeros(T)), contains='masses sum to zero')
test_fail(lambda: trajectory_signature(torch.ones(5, 3)), contains='all aspects coincide')
