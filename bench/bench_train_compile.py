"""Is `compile=on` worth it on a CPU? One training step, eager against torch.compile (inductor), for the models the
trainer compiles: the SQ3 SPLM (closed-form force) and MatchedGPT. (The MLP SPLM's force is autograd.grad with a
double backward, which torch.compile cannot trace: the trainer keeps it eager.)

The shape of `bench_train_throughput.py`: d = 128, L = 8, batch 8 × 256, GPT-2 vocabulary, one step = forward with
loss, backward, clipping at 1.0, AdamW; fp32. Eager and compiled share the weights (the compiled module wraps the same
model); the weights and optimizer state are restored before every timed step, so every step starts from the same
point. Timed in rounds, order rotated; ratio = median of the per-round ratios, 95 % bootstrap interval, sign test.
The compile time (the first compiled step) is reported apart. Last line: eager / compiled step time per model.
"""
import copy, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, rounds, summary, ratio_stats, save, train_step
from semsim.models import build_model

MODELS = {'splm_sq3': ('splm-sq3', {}), 'matched_gpt': ('matched-gpt', {'n_head': 4})}


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=7)
    args = p.parse_args()
    hw = setup(args)
    B, T, V, d, L = (2, 32, 2000, 32, 2) if args.quick else (8, 256, 50257, 128, 8)
    backend = 'aot_eager' if args.quick else 'inductor'
    ids = torch.randint(0, V, (B, T))
    out = {}
    for key, (name, kw) in MODELS.items():
        torch.manual_seed(0)
        model = build_model(name, d=d, L=L, vocab_size=V, max_len=T, **kw).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        w0 = copy.deepcopy(model.state_dict())
        compiled = torch.compile(model, backend=backend)
        def step(fwd): return train_step(model, opt, ids, fwd)
        def restore():
            model.load_state_dict(w0); opt.state.clear()
        restore(); t0 = time.perf_counter(); l_c = step(compiled); t_first = time.perf_counter() - t0
        restore(); l_e = step(model)
        times = rounds({'eager': lambda: step(model), 'compiled': lambda: step(compiled)}, repeats=args.repeats,
                       warmup=1, before=restore)
        st = ratio_stats(times['eager'], times['compiled'])
        out[key] = dict(model=name, times=summary(times), eager_over_compiled=st, first_compiled_step_s=t_first,
                        loss_eager=l_e, loss_compiled=l_c, loss_abs_diff=abs(l_e - l_c),
                        tokens_per_s=dict(eager=B * T / summary(times)['eager']['median_s'],
                                          compiled=B * T / summary(times)['compiled']['median_s']))
        print(f"{key:12s}: eager {summary(times)['eager']['median_s']:.3f} s, compiled {summary(times)['compiled']['median_s']:.3f} s "
              f"(first compiled step {t_first:.1f} s); eager/compiled {st['ratio']:.3f} "
              f"[{st['ratio_ci95'][0]:.3f}, {st['ratio_ci95'][1]:.3f}], {st['wins']}/{st['n']} rounds compiled faster; "
              f"loss difference {abs(l_e - l_c):.2e}", flush=True)
    save('train_compile_cpu', dict(question='training step, eager vs torch.compile on a CPU, for the models the trainer compiles',
                                   hardware=hw, backend=backend, batch=B, block=T, vocab=V, d=d, L=L, dtype='float32',
                                   timing='rounds, order rotated, weights restored before each step; ratio = median of '
                                          'per-round ratios, 95 % bootstrap interval, sign test', rows=out), args)
    print('RESULT eager/compiled step time (CPU): ' + ', '.join(f"{k} {v['eager_over_compiled']['ratio']:.2f}" for k, v in out.items()))


if __name__ == '__main__': main()
