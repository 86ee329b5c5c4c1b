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

The ceiling. Work that both methods must do identically bounds what any exact closed form can gain (Amdahl):
- force: the wells (μ, a, log π, b) are functions of ξ that both need; `wells` alone is timed in the same interleaved
  run, and autograd / wells is the largest ratio a closed form with zero cost for the h-dependent part could reach;
- training step: both sides run the same matrix products (the ξ projections forward and backward, the readout, the
  vocabulary log-softmax of the loss) — the profiler lists them by shape on both sides, and autograd step / the time
  of the calls common to both (same op, same shapes) in the closed-form step is the ceiling.
"""
from collections import Counter
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, interleaved, save, verdict
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


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--step-batch', type=int, default=2, help='batch of the training-step benchmark')
    args = p.parse_args()
    hw = setup(args)
    d, Kxi, Kmix, T, B = (32, 4, 8, 64, 2) if args.quick else (256, 4, 8, 512, 4)
    torch.manual_seed(0)
    pot = SQ3Potential(Kxi * d, d, K_mix=Kmix)
    xi, h = torch.randn(B, T, Kxi * d), torch.randn(B, T, d)
    closed = lambda: pot.energy_and_force(xi, h)
    def autograd():
        pot.closed_form = False
        try: return pot.energy_and_force(xi, h)
        finally: pot.closed_form = True
    (Vc, fc), (Va, fa) = closed(), autograd()
    err = ((fc - fa).abs().max() / fa.abs().max()).item()
    tf = interleaved({'closed_form': closed, 'autograd': autograd}, repeats=args.repeats)
    force_ratio = tf['autograd']['median_s'] / tf['closed_form']['median_s']
    print(f"force (B={B}, T={T}, d={d}, K_xi={Kxi}, K_mix={Kmix}): closed {1e3 * tf['closed_form']['median_s']:.1f} ms, "
          f"autograd {1e3 * tf['autograd']['median_s']:.1f} ms, ratio {force_ratio:.2f}x, max rel diff {err:.1e}", flush=True)

    # the shared floor: the wells alone, timed in the same interleaved way
    tw = interleaved({'wells': lambda: torch.no_grad()(pot.wells)(xi), 'closed_form': closed, 'autograd': autograd}, repeats=args.repeats)
    force_ceiling = tw['autograd']['median_s'] / tw['wells']['median_s']
    print(f"  shared floor: the wells (four projections of ξ) alone {1e3 * tw['wells']['median_s']:.1f} ms = "
          f"{100 * tw['wells']['median_s'] / tw['closed_form']['median_s']:.0f} % of the closed form; ceiling for any exact closed form "
          f"autograd / wells = {force_ceiling:.2f}x", flush=True)

    # the same with the wells (μ, a, log π, b: four projections of ξ, shared by both methods) computed beforehand
    with torch.no_grad(): wells = pot.wells(xi)
    pot.wells = lambda _xi: wells
    th = interleaved({'closed_form': closed, 'autograd': autograd}, repeats=args.repeats)
    del pot.wells
    h_ratio = th['autograd']['median_s'] / th['closed_form']['median_s']
    print(f"  h-dependent part only (wells given): closed {1e3 * th['closed_form']['median_s']:.1f} ms, "
          f"autograd {1e3 * th['autograd']['median_s']:.1f} ms, ratio {h_ratio:.2f}x", flush=True)

    cfg = SPLMConfig.preset('sq3_multixi', max_len=T, **(dict(d=d, vocab_size=1000) if args.quick else {}))
    model = SPLMForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    Bs = 1 if args.quick else args.step_batch
    ids = torch.randint(0, cfg.vocab_size, (Bs, T))
    def train_step(closed_form):
        model.V_theta.closed_form = closed_form
        try:
            opt.zero_grad(set_to_none=True)
            loss = model(ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss.item()
        finally: model.V_theta.closed_form = True
    ts = interleaved({'closed_form': lambda: train_step(True), 'autograd': lambda: train_step(False)},
                     repeats=max(3, args.repeats // 2), warmup=1)
    step_ratio = ts['autograd']['median_s'] / ts['closed_form']['median_s']
    print(f"training step (sq3_multixi, B={Bs}, T={T}, vocab {cfg.vocab_size}): closed {ts['closed_form']['median_s']:.2f} s, "
          f"autograd {ts['autograd']['median_s']:.2f} s, ratio {step_ratio:.2f}x", flush=True)
    floor_s, n_shared, n_closed = shared_floor(product_ops(lambda: train_step(True)), product_ops(lambda: train_step(False)))
    step_ceiling = ts['autograd']['median_s'] / floor_s
    print(f"  shared floor: {n_shared} of the closed form's {n_closed} matrix products and log-softmaxes are made, same op and "
          f"shapes, by autograd too: {floor_s:.2f} s; ceiling autograd / floor = {step_ceiling:.2f}x", flush=True)
    # (c) the sweep over T: force (with its ceiling) and training step at the smaller contexts, same weights
    sweep = []
    for Ts_ in ([16, 32] if args.quick else [128, 256]):
        xs, hs = xi[:, :Ts_].contiguous(), h[:, :Ts_].contiguous()
        def auto_s():
            pot.closed_form = False
            try: return pot.energy_and_force(xs, hs)
            finally: pot.closed_form = True
        tw_ = interleaved({'wells': lambda: torch.no_grad()(pot.wells)(xs), 'closed_form': lambda: pot.energy_and_force(xs, hs),
                           'autograd': auto_s}, repeats=2 * args.repeats)       # small differences of short times: more repeats
        ids_s = ids[:, :Ts_]
        def step_s(closed_form):
            model.V_theta.closed_form = closed_form
            try:
                opt.zero_grad(set_to_none=True); model(ids_s, labels=ids_s).loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
            finally: model.V_theta.closed_form = True
        ts_ = interleaved({'closed_form': lambda: step_s(True), 'autograd': lambda: step_s(False)}, repeats=max(5, args.repeats))
        sweep.append(dict(T=Ts_, force=dict(times=tw_, ratio=tw_['autograd']['median_s'] / tw_['closed_form']['median_s'],
                                            ceiling=tw_['autograd']['median_s'] / tw_['wells']['median_s']),
                          train_step=dict(B=Bs, times=ts_, ratio=ts_['autograd']['median_s'] / ts_['closed_form']['median_s'])))
    sweep.append(dict(T=T, force=dict(times=tw, ratio=tw['autograd']['median_s'] / tw['closed_form']['median_s'], ceiling=force_ceiling),
                      train_step=dict(B=Bs, times=ts, ratio=step_ratio, ceiling=step_ceiling)))
    for r in sweep:
        f_ = r['force']
        f_['share_of_ceiling_gain'] = (f_['ratio'] - 1) / (f_['ceiling'] - 1) if f_['ceiling'] > 1 else float('nan')
        if 'ceiling' in r['train_step']:
            st_ = r['train_step']; st_['share_of_ceiling_gain'] = (st_['ratio'] - 1) / (st_['ceiling'] - 1) if st_['ceiling'] > 1 else float('nan')
        print(f"  T={r['T']:4d}: force {f_['ratio']:.2f}x (ceiling {f_['ceiling']:.2f}x, share of the possible gain "
              f"{f_['share_of_ceiling_gain']:.0%}); training step {r['train_step']['ratio']:.2f}x", flush=True)
    never_slower = all(r['force']['ratio'] >= 1 and r['train_step']['ratio'] >= 1 for r in sweep)
    print(f"  closed form never slower than autograd at the measured shapes: {never_slower}", flush=True)
    save('forces', dict(question='SQ3 closed-form force vs autograd through the same V', hardware=hw,
                        force=dict(B=B, T=T, d=d, K_xi=Kxi, K_mix=Kmix, times=tf, ratio=force_ratio, max_rel_diff=err, threshold=2.0,
                                   floor=dict(times=tw, ceiling=force_ceiling),
                                   wells_given=dict(times=th, ratio=h_ratio)),
                        train_step=dict(B=Bs, T=T, config='sq3_multixi', vocab=cfg.vocab_size, times=ts, ratio=step_ratio, threshold=1.5,
                                        floor=dict(shared_s=floor_s, calls_shared=n_shared, calls_closed=n_closed, ceiling=step_ceiling)),
                        sweep=sweep, closed_never_slower=never_slower), args)
    assert err < 1e-4, 'closed form and autograd disagree'
    print(f"RESULT SQ3 closed-form vs autograd: force {force_ratio:.2f}x {verdict(force_ratio, 2)} (ceiling {force_ceiling:.2f}x); "
          f"training step {step_ratio:.2f}x {verdict(step_ratio, 1.5)} (ceiling {step_ceiling:.2f}x); closed form never slower at "
          f"T = {', '.join(str(r['T']) for r in sweep)}: {'PASS' if never_slower else 'FAIL'}")


if __name__ == '__main__': main()
