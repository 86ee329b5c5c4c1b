"""Question 4: per-token latency and memory of SPLM streaming against MatchedGPT with a KV cache, vs the context.

Equal width and depth, d = 128 and L = 8 as in the reference, GPT-2 vocabulary, CPU fp32. Decoders:
- SPLM em_ln with the MLP potential (force by the manual backward pass, `semsim.potentials`),
- SPLM em_ln with the SQ3 potential (closed-form force),
- MatchedGPT (4 heads, MLP ×4) with `KVCache`.
For each context T: prefill a T-token prompt (batch 1), then time decode steps — 2 warm-up steps, then 32 steps per
decoder interleaved round-robin (10 warm-up steps at the first context), median per step (the reference's protocol: median of 16 tokens after 2 warm-ups;
32 here because this machine is shared and noisy).
Batched decoding: the same caches repeated to batch 8 (`batch_repeat_interleave`) and timed again (per-token time =
step time / 8). Memory: the bytes each decoder state holds per sequence. Crossover T*: where the ratio attention / SPLM latency, measured per context
in one interleaved window and fitted by a Theil–Sen line against T, reaches 1 (see `crossover`) — reference:
T* ≈ 1,536 with an autograd-force decoder.
Last line: T* for the MLP SPLM at batch 1 and batch 8.
"""
import statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, save, sync
from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.baselines import MatchedGPTConfig, MatchedGPTForCausalLM
from semsim.lm import output_cache
from semsim.streaming import splm_prefill, splm_decode_step


def theil_sen(x, y) -> tuple: # (intercept, slope)
    "Median of pairwise slopes, then median intercept: one outlying point cannot drag the line."
    n = len(x)
    b = statistics.median([(y[j] - y[i]) / (x[j] - x[i]) for i in range(n) for j in range(i + 1, n)])
    return statistics.median([v - b * u for u, v in zip(x, y)]), b


def crossover(Ts, attn_ms, splm_ms):
    """The context T* where attention's per-token latency reaches the SPLM's.

    Primary estimate: the ratio attention / SPLM measured at each context — both decoders timed in the same
    interleaved window, so a slow period of this shared machine scales both and cancels — is fitted by a Theil–Sen
    line against T (attention's cost is affine in T, the SPLM's constant, so the ratio is affine too) and T* is where
    it reaches 1. Also reported: the same fit on the latencies themselves (attention line against the SPLM's median),
    and the least-squares version of that."""
    r0, r1 = theil_sen(Ts, [a / s for a, s in zip(attn_ms, splm_ms)])
    a, b = theil_sen(Ts, attn_ms)
    mx, my = sum(Ts) / len(Ts), sum(attn_ms) / len(Ts)
    b_ls = sum((x - mx) * (y - my) for x, y in zip(Ts, attn_ms)) / sum((x - mx) ** 2 for x in Ts)
    a_ls = my - b_ls * mx
    s = statistics.median(splm_ms)
    T_star = (1 - r0) / r1 if r1 > 0 else float('inf')
    return dict(T_star=max(T_star, 0.0), splm_faster_at_every_context=T_star <= 0, ratio_intercept=r0, ratio_slope_per_token=r1,
                attn_intercept_ms=a, attn_slope_ms_per_token=b, splm_median_ms=s,
                T_star_levels=max((s - a) / b, 0.0) if b > 0 else float('inf'),
                T_star_least_squares=max((statistics.mean(splm_ms) - a_ls) / b_ls, 0.0) if b_ls > 0 else float('inf'),
                first_grid_T_attention_slower=next((T for T, y, z in zip(Ts, attn_ms, splm_ms) if y > z), None))


def main():
    p = parser(__doc__)
    p.add_argument('--steps', type=int, default=32)
    p.add_argument('--batch', type=int, default=8, help='batched decoding size (0: skip)')
    args = p.parse_args()
    hw = setup(args)
    Ts = [16, 64, 256] if args.quick else [16, 64, 256, 512, 1024, 1536, 2048, 3072, 4096, 8192, 16384]
    V = 2000 if args.quick else 50257
    max_len = Ts[-1] + 2 * (args.steps + 10) + 16
    torch.manual_seed(0)
    models = {'splm_mlp': SPLMForCausalLM(SPLMConfig.preset('em_ln', max_len=max_len, vocab_size=V)).eval(),
              'splm_sq3': SPLMForCausalLM(SPLMConfig.preset('em_ln', max_len=max_len, vocab_size=V, potential='sq3')).eval(),
              'gpt_kv': MatchedGPTForCausalLM(MatchedGPTConfig(d=128, n_layer=8, n_head=4, max_len=max_len, vocab_size=V)).eval()}
    ids = torch.randint(0, V, (1, Ts[-1] + 2 * args.steps + 8))
    rows = []
    for T in Ts:
        t0 = time.perf_counter()
        caches = {k: splm_prefill(m, ids[:, :T], logits_to_keep=1)[1] for k, m in models.items() if k != 'gpt_kv'}
        with torch.no_grad(): caches['gpt_kv'] = output_cache(models['gpt_kv'](ids[:, :T], use_cache=True, logits_to_keep=1))
        t_prefill = time.perf_counter() - t0
        row = dict(T=T, bytes_per_sequence={k: c.nbytes for k, c in caches.items()})
        for B in ([1] + ([args.batch] if args.batch > 1 else [])):
            if B > 1:
                for c in caches.values(): c.batch_repeat_interleave(B)
            pos = {k: T for k in caches}
            def step(k):
                x = ids[:, pos[k]].expand(B)
                if k == 'gpt_kv':
                    with torch.no_grad(): models[k](x[:, None], cache=caches[k], use_cache=True, logits_to_keep=1)
                else: splm_decode_step(models[k], caches[k], x)
                pos[k] += 1
            times = {k: [] for k in caches}
            warm = 2 if rows else 10                                       # the first context also warms the allocator and caches
            for i in range(warm + args.steps):
                for k in caches:
                    sync(); t1 = time.perf_counter(); step(k); sync()
                    if i >= warm: times[k].append(time.perf_counter() - t1)
            row[f'ms_per_step_B{B}'] = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            row[f'ms_per_token_B{B}'] = {k: v / B for k, v in row[f'ms_per_step_B{B}'].items()}
        rows.append(row)
        print(f"T={T:6d} (prefill {t_prefill:5.1f} s): " + '  '.join(f"B{B}: " + ', '.join(f"{k} {v:.2f}" for k, v in row[f'ms_per_token_B{B}'].items())
              for B in ([1] + ([args.batch] if args.batch > 1 else []))) + ' ms/token;  bytes/seq ' +
              ', '.join(f"{k} {v:,}" for k, v in row['bytes_per_sequence'].items()), flush=True)
    res = {}
    for B in ([1] + ([args.batch] if args.batch > 1 else [])):
        attn = [r[f'ms_per_token_B{B}']['gpt_kv'] for r in rows]
        for k in ('splm_mlp', 'splm_sq3'):
            res[f'{k}_B{B}'] = crossover(Ts, attn, [r[f'ms_per_token_B{B}'][k] for r in rows])
            c = res[f'{k}_B{B}']
            print(f"crossover {k} batch {B}: T* = {c['T_star']:,.0f} (attention {c['attn_intercept_ms']:.2f} ms + {1e3 * c['attn_slope_ms_per_token']:.3f} ms per 1k tokens; "
                  f"SPLM {c['splm_median_ms']:.2f} ms; from the latency levels T* {c['T_star_levels']:,.0f}, least squares {c['T_star_least_squares']:,.0f}; first grid T with attention slower: {c['first_grid_T_attention_slower']})")
    save('vs_attention', dict(question='SPLM streaming vs MatchedGPT KV cache: latency and memory vs context', hardware=hw, d=128, L=8,
                              vocab=V, steps=args.steps, batch=args.batch, rows=rows, crossover=res, reference_T_star=1536), args)
    b = args.batch if args.batch > 1 else 1
    print(f"RESULT crossover T* (SPLM MLP streaming vs MatchedGPT KV): batch 1 {res['splm_mlp_B1']['T_star']:,.0f}, "
          f"batch {b} {res[f'splm_mlp_B{b}']['T_star']:,.0f}; SQ3 batch 1 {res['splm_sq3_B1']['T_star']:,.0f} (reference 1,536)")


if __name__ == '__main__': main()
