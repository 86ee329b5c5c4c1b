"""Question 9: how does a hybrid decode? A KV cache for its attention blocks, the recurrent state for its S-steps.

Q9d AAAASSSS at the reference's Shakespeare size (d 128, 4 attention blocks + 4 S-steps of one MLP V_θ with v_hidden
512, GPT-2 vocabulary) beside MatchedGPT (8 attention blocks, KV cache) and em_ln (8 S-steps, recurrent state),
batch 1, greedy:
(a) `generate(prompt of 256, max_new_tokens=64)` with the cache against full recompute: same tokens, the speed-up;
(b) per-token latency at context 128 and 1,024 (median of interleaved decode steps on each cache) and the cache's
    bytes at both: the hybrid's grows like attention's, at half MatchedGPT's rate (4 of its 8 blocks keep keys and
    values), plus the S-part's constant state.
Last line: the hybrid's cache-bytes growth relative to MatchedGPT's (expected 0.5) and its cached speed-up.
"""
import statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, interleaved, save
from semsim.models import build_model
from semsim.lm import output_cache


def main():
    p = parser(__doc__)
    p.add_argument('--steps', type=int, default=32, help='timed decode steps per context in (b)')
    args = p.parse_args()
    hw = setup(args)
    prompt_len, new, short, long_ = (16, 8, 16, 64) if args.quick else (256, 64, 128, 1024)
    sizes = dict(max_len=long_ + 2 * args.steps + 16, **(dict(vocab_size=2000, d=32, v_hidden=64) if args.quick else {}))
    torch.manual_seed(0)
    models = {'helmholtz-q9d': build_model('helmholtz-q9d', **sizes), 'matched-gpt': build_model('matched-gpt', **sizes),
              'splm-em-ln': build_model('splm-em-ln', **sizes)}
    for m in models.values():
        m.eval()
        if getattr(m.config, 'mass_mode', None) == 'logfreq': m.set_logfreq_surprisal(torch.rand(m.config.vocab_size) * 10)
    V = models['matched-gpt'].config.vocab_size
    prompt = torch.randint(0, V, (1, prompt_len))
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    hyb = models['helmholtz-q9d']
    t0 = time.perf_counter(); fast = hyb.generate(prompt, use_cache=True, **kw); t_cached = time.perf_counter() - t0
    t0 = time.perf_counter(); slow = hyb.generate(prompt, use_cache=False, **kw); t_full = time.perf_counter() - t0
    same, speedup = torch.equal(fast, slow), t_full / t_cached
    print(f"Q9d generate {prompt_len} + {new}: cached {t_cached:.2f} s, recompute {t_full:.2f} s, {speedup:.1f}x; identical tokens {same}", flush=True)

    ids = torch.randint(0, V, (1, long_ + args.steps + 8))
    lat, nbytes = {}, {}
    for name, m in models.items():
        caches = {T: output_cache(m(ids[:, :T], use_cache=True, logits_to_keep=1)) for T in (short, long_)}
        nxt = {T: T for T in caches}
        def step(T, m=m, caches=caches, nxt=nxt):
            m(ids[:, nxt[T]:nxt[T] + 1], cache=caches[T], use_cache=True); nxt[T] += 1
        t = interleaved({short: lambda: step(short), long_: lambda: step(long_)}, repeats=args.steps, warmup=2)
        lat[name] = {str(T): t[T]['median_s'] for T in (short, long_)}
        nbytes[name] = {str(T): caches[T].nbytes for T in (short, long_)}
        print(f"{name:14s} per-token latency ctx {short}: {1e3 * t[short]['median_s']:.2f} ms, ctx {long_}: {1e3 * t[long_]['median_s']:.2f} ms; "
              f"cache {nbytes[name][str(short)]:,} -> {nbytes[name][str(long_)]:,} bytes", flush=True)
    growth = lambda n: nbytes[n][str(long_)] - nbytes[n][str(short)]
    rel = growth('helmholtz-q9d') / growth('matched-gpt')
    save('hybrid_decode', dict(question='hybrid decoding: KV cache for the A-part, recurrent state for the S-part', hardware=hw,
                               models=list(models), d=hyb.config.d, vocab=V, prompt=prompt_len, new_tokens=new,
                               cached_s=t_cached, recompute_s=t_full, speedup=speedup, identical_tokens=same,
                               contexts=[short, long_], latency_s=lat, cache_bytes=nbytes, cache_growth_vs_matched=rel), args)
    assert same, 'cached and recomputed generation differ'
    print(f"RESULT hybrid decode: cache growth {rel:.2f} of MatchedGPT's (4 of 8 blocks attend), cached generate {speedup:.1f}x recompute")


if __name__ == '__main__': main()
