"""Question 8: where the time of one SPLM-MLP training step goes, and what an exact rewrite of its force saves.

The throughput benchmark's shape: em_ln SPLM with the MLP potential (512 × 3), d = 128, L = 8, GPT-2 vocabulary,
batch 8 × 256, CPU fp32, one training step = forward with loss, backward, clip 1.0, AdamW; MatchedGPT (4 heads) at
the same d and L timed in the same interleaved run. The step is split into parts, each timed on its own with the
same tensors (interleaved medians):
- readout: the logits F.linear(h_L, E) over the vocabulary and the loss, forward and backward;
- pools: the L ξ pools (forward only: ξ is built from the detached state and the cumulative mean has no weights);
- force, first order: L evaluations of f = -∂V/∂h by autograd.grad without a graph (what inference would pay);
- force with its second-order graph: L evaluations with create_graph=True and the backward through them (what
  training pays); the second-order share is this minus the first-order force;
- optimizer: gradient clipping and AdamW over the parameters;
- the rest (embedding, mass, the integrator's elementwise chain and its backward, LN) is the full step minus these.
Also the ten most expensive ops of the full step by self CPU time (torch.profiler).

The saving taken: `MLPPotential.energy` multiplies ξ and h by their own column blocks of W₁ instead of concatenating
[ξ; h] (issue 18), so autograd's ∂V/∂h — and the second-order graph through it — no longer differentiates the ξ
columns only to discard them. It is the same function: "before" below is the concatenating energy (restored here for
the measurement), "after" the library's. A second rewrite was measured and not taken: differentiating through the
hand-written backward pass (`semsim.potentials.mlp_energy_and_force`, which decoding uses) with the graph kept.
Both are checked exact: loss and every parameter gradient equal the concatenating step's to float32 round-off.
torch.compile of the force is not tried: its double backward is what torch.compile cannot trace (the trainer keeps
this model eager).
Last line: SPLM-MLP / MatchedGPT tokens/s before (autograd force) and after (manual force with its graph).
"""
import sys, types
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.nn.functional as F
from _common import parser, setup, interleaved, save, train_step
from semsim.models import build_model
from semsim.lm import lm_loss
from semsim.potentials import MLPPotential, Potential, mlp_energy_and_force


def cat_energy(self, xi, h): # V, (B,T)
    "The MLP energy as it was before issue 18: one product on the concatenation [ξ; h]."
    return self.net(torch.cat([self.check(xi, h), h], -1)).squeeze(-1)


def manual_graph_force(self, xi, h, create_graph=False, need_energy=True): # (V (B,T), f (B,T,d))
    "The MLP force by its hand-written backward pass, differentiable when create_graph (the saving measured here)."
    if not create_graph: return MLPPotential.energy_and_force(self, xi, h, False, need_energy)
    return mlp_energy_and_force(self, self.check(xi, h), h, need_energy)


def top_ops(fn, n:int=10) -> list: # [{op, shapes, calls, self_s}]
    "The n ops with the largest self CPU time in one call of fn."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof: fn()
    ev = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [dict(op=e.key, shapes=str(e.input_shapes)[:120], calls=e.count, self_s=e.self_cpu_time_total / 1e6,
                 share=e.self_cpu_time_total / total) for e in ev[:n]]


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=4)
    args = p.parse_args()
    hw = setup(args)
    B, T, V = (2, 32, 2000) if args.quick else (8, 256, 50257)
    torch.manual_seed(0)
    mlp = build_model('splm-em-ln', vocab_size=V, max_len=T).train()
    gpt = build_model('matched-gpt', vocab_size=V, max_len=T, d=128, L=8, n_head=4).train()
    c = mlp.config
    opts = {k: torch.optim.AdamW(m.parameters(), lr=3e-4) for k, m in (('mlp', mlp), ('gpt', gpt))}
    ids = torch.randint(0, V, (B, T))
    pot = mlp.V_theta

    def step(model, opt): return train_step(model, opt, ids)
    def patched(attr, impl):
        "fn -> fn run with pot.<attr> replaced by impl."
        def run(fn):
            setattr(pot, attr, types.MethodType(impl, pot))
            try: return fn()
            finally: delattr(pot, attr)
        return run
    with_manual, with_cat = patched('energy_and_force', manual_graph_force), patched('energy', cat_energy)

    # exactness of the saving: loss and gradients of one forward + backward, both ways, same weights and batch
    def grads():
        mlp.zero_grad(set_to_none=True)
        loss = mlp(ids, labels=ids).loss; loss.backward()
        return loss.item(), {n: q.grad.clone() for n, q in mlp.named_parameters() if q.grad is not None}
    (la, ga), (ls, gs), (lm, gm) = with_cat(grads), grads(), with_manual(grads)
    rel = lambda g: max(((ga[n] - g[n]).abs().max() / ga[n].abs().max().clamp_min(1e-30)).item() for n in ga)
    grad_err, grad_err_manual = rel(gs), rel(gm)
    mlp.zero_grad(set_to_none=True)
    print(f"against the concatenating energy: split W₁ loss {ls:.6f}, manual force {lm:.6f} vs {la:.6f}; max relative gradient "
          f"difference {grad_err:.1e} (split), {grad_err_manual:.1e} (manual) over {len(ga)} parameters "
          f"(same sets: {set(ga) == set(gs) == set(gm)})", flush=True)

    # the parts, with the tensors of one forward pass
    with torch.no_grad():
        h = mlp._ln(mlp.E(ids) + mlp.P[:T])
        xi = mlp.context(h)
    hL = h.clone().requires_grad_(True)
    gout = torch.randn_like(h)
    def readout():
        loss = lm_loss(F.linear(hL, mlp.E.weight), ids); loss.backward(); mlp.E.weight.grad = None; hL.grad = None
    def pools():
        with torch.no_grad():
            for _ in range(c.L): mlp.context(h)
    def force_first():
        for _ in range(c.L): pot._autograd(xi, h, False)
    def force_second(manual=False, cat=False):
        if cat: return with_cat(lambda: force_second(manual))
        hh = h.clone().requires_grad_(True)
        tot = 0
        for _ in range(c.L):
            f = (manual_graph_force(pot, xi, hh, True)[1] if manual else pot.energy_and_force(xi, hh, create_graph=True)[1])
            tot = tot + (f * gout).sum()
        tot.backward()
        for q in pot.parameters(): q.grad = None
    params = list(mlp.parameters())
    G = [torch.randn_like(q) * 1e-3 for q in params]
    def optim():
        for q, g in zip(params, G): q.grad = g           # the other parts reset some gradients: give every parameter one
        torch.nn.utils.clip_grad_norm_(params, 1.0); opts['mlp'].step()
    optim()                                           # AdamW's state exists, as in a running training
    fns = {'step_cat': lambda: with_cat(lambda: step(mlp, opts['mlp'])), 'step_split': lambda: step(mlp, opts['mlp']),
           'step_manual': lambda: with_manual(lambda: step(mlp, opts['mlp'])), 'step_gpt': lambda: step(gpt, opts['gpt']),
           'readout': readout, 'pools': pools, 'force_first_order_cat': lambda: with_cat(force_first),
           'force_second_order_cat': lambda: force_second(cat=True), 'force_second_order_split': force_second,
           'force_second_order_manual': lambda: force_second(manual=True), 'optimizer': optim}
    t = interleaved(fns, repeats=args.repeats, warmup=1)
    ms = {k: v['median_s'] for k, v in t.items()}
    full = ms['step_cat']                             # the profile is of the step as it was (concatenating energy)
    parts = {'readout (logits + loss, fwd + bwd)': ms['readout'], 'ξ pools (L forwards)': ms['pools'],
             'force, first order (L autograd.grad, no graph)': ms['force_first_order_cat'],
             'second-order graph of the force (with graph + backward, minus first order)': ms['force_second_order_cat'] - ms['force_first_order_cat'],
             'optimizer (clip + AdamW)': ms['optimizer']}
    parts['rest (embedding, mass, integrator chain and its backward, LN)'] = full - sum(parts.values())
    shares = {k: v / full for k, v in parts.items()}
    for k, v in parts.items(): print(f"  {k:78s} {v:7.3f} s  {100 * shares[k]:5.1f} %")
    tok = {k: B * T / ms[k] for k in ('step_cat', 'step_split', 'step_manual', 'step_gpt')}
    before, after, manual = (tok[k] / tok['step_gpt'] for k in ('step_cat', 'step_split', 'step_manual'))
    print(f"full step: SPLM-MLP before (concatenating energy) {full:.2f} s, after (split W₁) {ms['step_split']:.2f} s "
          f"({full / ms['step_split']:.2f}x), through the manual force {ms['step_manual']:.2f} s ({full / ms['step_manual']:.2f}x), "
          f"MatchedGPT {ms['step_gpt']:.2f} s; the L forces with their second-order graph {ms['force_second_order_cat']:.3f} s before, "
          f"{ms['force_second_order_split']:.3f} s after, {ms['force_second_order_manual']:.3f} s manual", flush=True)
    ops = top_ops(lambda: step(mlp, opts['mlp']))
    for o in ops: print(f"  {o['op']:36s} {o['calls']:5d} calls {o['self_s']:7.3f} s {100 * o['share']:5.1f} %  {o['shapes']}")
    save('train_profile', dict(question='where the SPLM-MLP training step spends its time; an exact rewrite of its force',
                               hardware=hw, batch=B, block=T, vocab=V, d=c.d, L=c.L, v_hidden=c.v_hidden, v_depth=c.v_depth,
                               times=t, parts_s=parts, shares=shares, top_ops=ops,
                               saving=dict(what='MLPPotential.energy: W₁ split into its ξ and h column blocks (no concatenation)',
                                           max_rel_grad_diff=grad_err, loss_before=la, loss_after=ls,
                                           step_speedup=full / ms['step_split'],
                                           force_second_order_speedup=ms['force_second_order_cat'] / ms['force_second_order_split']),
                               not_taken=dict(what='differentiating through the hand-written backward pass (mlp_energy_and_force) with its graph',
                                              max_rel_grad_diff=grad_err_manual, loss=lm, step_speedup=full / ms['step_manual'],
                                              force_second_order_speedup=ms['force_second_order_cat'] / ms['force_second_order_manual'],
                                              ratio_to_gpt=manual),
                               tokens_per_s=tok, ratio_before=before, ratio_after=after), args)
    assert grad_err < 1e-3 and grad_err_manual < 1e-3, 'a rewritten force does not give the same gradients'
    print(f"RESULT SPLM-MLP / MatchedGPT training tokens/s: {before:.2f} before, {after:.2f} after the split W₁ "
          f"({full / ms['step_split']:.2f}x step; manual force {full / ms['step_manual']:.2f}x, not taken); "
          f"second-order graph {100 * shares[list(parts)[3]]:.0f} % of the step, readout {100 * shares[list(parts)[0]]:.0f} %")

if __name__ == '__main__': main()
