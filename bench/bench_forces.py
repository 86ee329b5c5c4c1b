"""Question 2: what do closed-form forces buy? SQ3 closed form vs autograd through the same V.

SQ3 mixture potential at d = 256, K_xi = 4 (ξ width 1024), K_mix = 8, T = 512 (B = 4):
(a) one force evaluation, f = -∂V/∂h, closed form vs torch.autograd.grad of the same energy (no graph kept); also
    with the wells (the four projections of ξ, common to both) computed beforehand, to show the h-dependent part;
(b) one full training step of the sq3_multixi SPLM (L = 8, EMA K = 4, LN, logfreq mass, λ_V = 0.01, GPT-2 vocabulary):
    forward with loss, backward through the forces (second order: create_graph), AdamW step — the potential's
    `closed_form` switched off for the autograd side, same weights, same batch.
Thresholds (issue 5): force ≥ 2×, training step ≥ 1.5×. Last line: the force ratio (and the step ratio).
(c) the same force and training-step comparisons at T = 128 and 256 (issue 18): the closed form must never be slower
    than autograd at any measured shape, and the bench reports the share of the ceiling's gain the closed form
    realises, (ratio − 1) / (ceiling − 1), at each. The 2× claim is for a GPU to confirm or refute
    (`bench/device_check.py`); this machine has none.

Timing. The two methods (and the wells) run in rounds, once each per round, the order rotated every round; a ratio is
the median of the per-round ratios, given with its 95 % bootstrap interval and the one-sided sign test that the
closed form is faster. The closed form's gain in a training step is a few per cent (it removes an elementwise chain
beside matrix products both methods make), smaller than the drift of a shared 2-core machine between two separate
medians; within a round the drift cancels. More rounds at the short contexts, where a step is cheap.

The ceiling. Work that both methods must do identically bounds what any exact closed form can gain (Amdahl):
- force: the wells (μ, a, log π, b) are functions of ξ that both need; `wells` alone is timed in the same interleaved
  run, and autograd / wells is the largest ratio a closed form with zero cost for the h-dependent part could reach;
- training step: both sides run the same matrix products (the ξ projections forward and backward, the readout, the
  vocabulary log-softmax of the loss) — the profiler lists them by shape on both sides, and autograd step / the time
  of the calls common to both (same op, same shapes) in the closed-form step is a (loose) ceiling. The tight one:
  the two steps differ only in V_θ's L calls of energy and force with their backward; timed alone from given wells
  (`differing_part`), they give the time the closed form saves per step, the step ratio that predicts, and the
  ceiling autograd step / (autograd step − the autograd side of that part).
Every timed step starts from the same weights and optimiser state (restored, untimed, before each call).
"""
import copy, statistics, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, rounds, summary, ratio_stats, save, verdict, train_step as trainer_step
from semsim.potentials import SQ3Potential
from semsim.splm import SPLMConfig, SPLMForCausalLM


SHARED = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::_log_softmax', 'aten::_log_softmax_backward_data')

def product_ops(fn) -> dict: # {(op, input shapes): (calls, seconds)}
    "The matrix products and log-softmaxes of one call of fn, by op and shapes, with their CPU time."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof: fn()
    return {(e.key, str(e.input_shapes)): (e.count, e.self_cpu_time_total / 1e6)
            for e in prof.key_averages(group_by_input_shape=True) if e.key in SHARED}


def shared_floor(closed:dict, auto:dict) -> tuple: # (seconds, calls shared, calls of the closed form)
    "Time the closed form spends in the calls (same op, same shapes) that autograd makes too."
    t = sum(tc * min(nc, auto[k][0]) / nc for k, (nc, tc) in closed.items() if k in auto)
    return t, sum(min(nc, auto[k][0]) for k, (nc, _) in closed.items() if k in auto), sum(n for n, _ in closed.values())


def differing_part(pot, xi, h):
    """The only work in which the two training steps differ: V_θ's energy and force from given wells (leaves), with
    create_graph, and the backward of a loss through both into h and the wells; returns `run(closed_form)`."""
    with torch.no_grad(): wells = [w.clone().requires_grad_(True) for w in pot.wells(xi)]
    hl = h.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    Vb, Gb = torch.randn(h.shape[:2], generator=g), torch.randn(h.shape, generator=g)   # upstream gradients of V and f
    def run(closed):
        pot.wells, pot.closed_form = (lambda _xi: wells), closed
        try:
            V, f = pot.energy_and_force(xi, hl, create_graph=True)
            return torch.autograd.grad((V * Vb).sum() + (f * Gb).sum(), [hl, *wells])
        finally: del pot.wells; pot.closed_form = True
    return run


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=11, help='rounds of the training step at the longest context (more at the shorter ones)')
    p.add_argument('--step-batch', type=int, default=2, help='batch of the training-step benchmark')
    args = p.parse_args()
    if args.quick: args.repeats = min(args.repeats, 3)
    hw = setup(args)
    d, Kxi, Kmix, T, B = (32, 4, 8, 64, 2) if args.quick else (256, 4, 8, 512, 4)
    Ts = [16, 32, T] if args.quick else [128, 256, T]
    torch.manual_seed(0)
    pot = SQ3Potential(Kxi * d, d, K_mix=Kmix)
    xi, h = torch.randn(B, T, Kxi * d), torch.randn(B, T, d)
    def auto_force(x, hh):
        pot.closed_form = False
        try: return pot.energy_and_force(x, hh)
        finally: pot.closed_form = True
    (Vc, fc), (Va, fa) = pot.energy_and_force(xi, h), auto_force(xi, h)
    err = ((fc - fa).abs().max() / fa.abs().max()).item()

    cfg = SPLMConfig.preset('sq3_multixi', max_len=T, **(dict(d=d, vocab_size=1000) if args.quick else {}))
    model = SPLMForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    Bs = 1 if args.quick else args.step_batch
    ids = torch.randint(0, cfg.vocab_size, (Bs, T))
    def train_step(ids_, closed_form):
        model.V_theta.closed_form = closed_form
        try: return trainer_step(model, opt, ids_)
        finally: model.V_theta.closed_form = True

    # Every timed step starts from the same weights and optimiser state: a step changes them, and a few dozen steps on
    # one batch drive activations into subnormal floats, which slow any op they reach by up to several times.
    train_step(ids[:, :Ts[0]], True)
    snapshot = copy.deepcopy((model.state_dict(), opt.state_dict()))
    def restore(): model.load_state_dict(snapshot[0]); opt.load_state_dict(snapshot[1])
    sweep = []
    for Ts_ in Ts:
        xs, hs = xi[:, :Ts_].contiguous(), h[:, :Ts_].contiguous()
        # (a) the force, with the wells alone (the ceiling's shared floor) in the same rounds
        tf = rounds({'closed_form': lambda: pot.energy_and_force(xs, hs), 'autograd': lambda: auto_force(xs, hs),
                     'wells': lambda: torch.no_grad()(pot.wells)(xs)}, repeats=3 * args.repeats)
        fr, ceil = ratio_stats(tf['autograd'], tf['closed_form']), ratio_stats(tf['autograd'], tf['wells'])['ratio']
        # (b) the training step, same weights, same batch (the optimiser steps both ways, so the weights drift alike)
        ids_s = ids[:, :Ts_]
        n_step = max(5, round(args.repeats * (T / Ts_) ** 0.5))
        ts = rounds({'closed_form': lambda: train_step(ids_s, True), 'autograd': lambda: train_step(ids_s, False)},
                    repeats=n_step, before=restore)
        sr = ratio_stats(ts['autograd'], ts['closed_form'])
        # (b') what differs between the two steps, alone: L calls of V_θ's energy and force, forward and backward
        run = differing_part(pot, xi[:Bs, :Ts_].contiguous(), h[:Bs, :Ts_].contiguous())
        gc_, ga_ = run(True), run(False)
        dmax = max(((u - v).abs().max() / v.abs().max().clamp_min(1e-30)).item() for u, v in zip(gc_, ga_))
        td = rounds({'closed_form': lambda: run(True), 'autograd': lambda: run(False)}, repeats=3 * args.repeats)
        dr = ratio_stats(td['autograd'], td['closed_form'])
        S_a, L_ = statistics.median(ts['autograd']), cfg.L
        saved = L_ * (statistics.median(td['autograd']) - statistics.median(td['closed_form']))
        differing = dict(calls_per_step=L_, times=summary(td), **dr, max_rel_diff_grads=dmax, saved_s_per_step=saved,
                         predicted_step_ratio=S_a / (S_a - saved),
                         ceiling=S_a / (S_a - L_ * statistics.median(td['autograd'])))
        sweep.append(dict(T=Ts_, force=dict(B=B, times=summary(tf), **fr, ceiling=ceil,
                                            share_of_ceiling_gain=(fr['ratio'] - 1) / (ceil - 1) if ceil > 1 else float('nan')),
                          train_step=dict(B=Bs, times=summary(ts), **sr, differing_part=differing)))
        print(f"T={Ts_:4d}: force (B={B}) closed {1e3 * sweep[-1]['force']['times']['closed_form']['median_s']:.1f} ms, "
              f"autograd {1e3 * sweep[-1]['force']['times']['autograd']['median_s']:.1f} ms, ratio {fr['ratio']:.3f}x "
              f"[{fr['ratio_ci95'][0]:.3f}, {fr['ratio_ci95'][1]:.3f}] faster in {fr['wins']}/{fr['n']} rounds, ceiling {ceil:.2f}x; "
              f"training step (B={Bs}) closed {sweep[-1]['train_step']['times']['closed_form']['median_s']:.2f} s, ratio {sr['ratio']:.3f}x "
              f"[{sr['ratio_ci95'][0]:.3f}, {sr['ratio_ci95'][1]:.3f}] faster in {sr['wins']}/{sr['n']} rounds", flush=True)
        print(f"        the part that differs ({L_} calls of V_θ per step, forward and backward): closed "
              f"{1e3 * differing['times']['closed_form']['median_s']:.1f} ms, autograd {1e3 * differing['times']['autograd']['median_s']:.1f} ms "
              f"per call, ratio {dr['ratio']:.2f}x [{dr['ratio_ci95'][0]:.2f}, {dr['ratio_ci95'][1]:.2f}] faster in {dr['wins']}/{dr['n']} rounds "
              f"(gradients agree to {dmax:.0e}); saves {1e3 * saved:.0f} ms a step: predicted step ratio {differing['predicted_step_ratio']:.3f}x, "
              f"ceiling {differing['ceiling']:.3f}x", flush=True)
    top = sweep[-1]
    force_ratio, step_ratio = top['force']['ratio'], top['train_step']['ratio']
    force_ceiling = top['force']['ceiling']
    print(f"  shared floor at T={T}: the wells (four projections of ξ) alone {1e3 * top['force']['times']['wells']['median_s']:.1f} ms; "
          f"ceiling for any exact closed form autograd / wells = {force_ceiling:.2f}x", flush=True)

    # the h-dependent part alone: the wells (μ, a, log π, b, shared by both methods) computed beforehand
    with torch.no_grad(): wells = pot.wells(xi)
    pot.wells = lambda _xi: wells
    th = rounds({'closed_form': lambda: pot.energy_and_force(xi, h), 'autograd': lambda: auto_force(xi, h)}, repeats=3 * args.repeats)
    del pot.wells
    hr = ratio_stats(th['autograd'], th['closed_form'])
    print(f"  h-dependent part only (wells given): closed {1e3 * statistics.median(th['closed_form']):.1f} ms, "
          f"autograd {1e3 * statistics.median(th['autograd']):.1f} ms, ratio {hr['ratio']:.2f}x", flush=True)

    restore(); pc = product_ops(lambda: train_step(ids, True)); restore()
    floor_s, n_shared, n_closed = shared_floor(pc, product_ops(lambda: train_step(ids, False)))
    step_ceiling = top['train_step']['times']['autograd']['median_s'] / floor_s
    top['train_step']['ceiling'] = step_ceiling
    top['train_step']['share_of_ceiling_gain'] = (step_ratio - 1) / (step_ceiling - 1) if step_ceiling > 1 else float('nan')
    print(f"  training step at T={T}: {n_shared} of the closed form's {n_closed} matrix products and log-softmaxes are made, same op "
          f"and shapes, by autograd too: {floor_s:.2f} s; ceiling autograd / floor = {step_ceiling:.2f}x", flush=True)
    # never slower: the force and the part of the step that differs are faster with 95 % confidence at every shape, and
    # the whole step (the same work plus that part) is nowhere significantly slower
    signif_slower = [r['T'] for r in sweep if r['force']['ratio_ci95'][1] < 1 or r['train_step']['ratio_ci95'][1] < 1]
    never_slower = not signif_slower and all(r['force']['ratio_ci95'][0] > 1 and r['train_step']['differing_part']['ratio_ci95'][0] > 1
                                             for r in sweep)
    step_consistent = [r['T'] for r in sweep
                       if r['train_step']['ratio_ci95'][0] <= r['train_step']['differing_part']['predicted_step_ratio'] <= r['train_step']['ratio_ci95'][1]]
    print(f"  closed form never slower than autograd at the measured shapes (force and the differing part faster, 95 % interval "
          f"above 1; the whole step nowhere significantly slower): {never_slower}; whole step significantly slower at: "
          f"{signif_slower or 'none'}; predicted step ratio inside the measured interval at T = {step_consistent}", flush=True)
    save('forces', dict(question='SQ3 closed-form force vs autograd through the same V', hardware=hw,
                        timing='rounds, order rotated; ratio = median of per-round ratios, 95 % bootstrap interval, sign test',
                        force=dict(B=B, T=T, d=d, K_xi=Kxi, K_mix=Kmix, times=top['force']['times'], ratio=force_ratio,
                                   ratio_ci95=top['force']['ratio_ci95'], max_rel_diff=err, threshold=2.0,
                                   floor=dict(times=top['force']['times'], ceiling=force_ceiling),
                                   wells_given=dict(times=summary(th), **hr)),
                        train_step=dict(B=Bs, T=T, config='sq3_multixi', vocab=cfg.vocab_size, times=top['train_step']['times'],
                                        ratio=step_ratio, ratio_ci95=top['train_step']['ratio_ci95'], threshold=1.5,
                                        floor=dict(shared_s=floor_s, calls_shared=n_shared, calls_closed=n_closed, ceiling=step_ceiling)),
                        sweep=sweep, closed_never_slower=never_slower, significantly_slower_at=signif_slower,
                        predicted_inside_interval_at=step_consistent), args)
    assert err < 1e-4, 'closed form and autograd disagree'
    print(f"RESULT SQ3 closed-form vs autograd: force {force_ratio:.2f}x {verdict(force_ratio, 2)} (ceiling {force_ceiling:.2f}x); "
          f"training step {step_ratio:.2f}x {verdict(step_ratio, 1.5)} (ceiling {step_ceiling:.2f}x); closed form never slower at "
          f"T = {', '.join(str(r['T']) for r in sweep)}: {'PASS' if never_slower else 'FAIL'}")


if __name__ == '__main__': main()
