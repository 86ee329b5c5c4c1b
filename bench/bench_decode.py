"""Question 3: how much faster is streaming decode than full recompute, and is its cost flat in the context?

The em_ln SPLM at the reference size (d = 128, L = 8, MLP V with v_hidden 512 and depth 3, LN after each step,
logfreq mass, GPT-2 vocabulary), batch 1, greedy:
(a) `generate(prompt of 512, max_new_tokens=256)` with `use_cache=True` (SPLMCache) against `use_cache=False` (the
    whole window re-run for every token); the recompute run is long, so it is timed once, the streaming run is the
    median of repeats; both must produce the same tokens;
(b) per-token latency at context 2,048 over context 128: median of 64 interleaved decode steps on each cache.
Thresholds (issue 5): (a) ≥ 20×; (b) ≤ 1.3. Last line: both.
"""
import statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, interleaved, save, verdict
from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.streaming import splm_prefill, splm_decode_step


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--steps', type=int, default=64, help='timed decode steps per context in (b)')
    args = p.parse_args()
    hw = setup(args)
    prompt_len, new, short, long_ = (64, 32, 16, 256) if args.quick else (512, 256, 128, 2048)
    cfg = SPLMConfig.preset('em_ln', max_len=long_ + 2 * args.steps + 16, **(dict(vocab_size=5000) if args.quick else {}))
    torch.manual_seed(0)
    model = SPLMForCausalLM(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_len))
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    ts = []
    for _ in range(args.repeats):
        t0 = time.perf_counter(); fast = model.generate(prompt, use_cache=True, **kw); ts.append(time.perf_counter() - t0)
    t_stream = statistics.median(ts)
    print(f"streaming generate: {prompt_len} + {new} tokens in {t_stream:.2f} s (median of {args.repeats}: {[round(t, 2) for t in ts]})", flush=True)
    t0 = time.perf_counter(); slow = model.generate(prompt, use_cache=False, **kw); t_full = time.perf_counter() - t0
    same = torch.equal(fast, slow)
    ratio = t_full / t_stream
    print(f"full recompute generate: {t_full:.1f} s (once); identical tokens: {same}; ratio {ratio:.1f}x", flush=True)

    ids = torch.randint(0, cfg.vocab_size, (1, long_ + args.steps + 8))
    caches = {T: splm_prefill(model, ids[:, :T], logits_to_keep=1)[1] for T in (short, long_)}
    nxt = {T: T for T in caches}
    def step(T):
        splm_decode_step(model, caches[T], ids[:, nxt[T]]); nxt[T] += 1
    t = interleaved({short: lambda: step(short), long_: lambda: step(long_)}, repeats=args.steps, warmup=4)
    flat = t[long_]['median_s'] / t[short]['median_s']
    print(f"per-token latency: context {short}: {1e3 * t[short]['median_s']:.2f} ms, context {long_}: {1e3 * t[long_]['median_s']:.2f} ms, "
          f"ratio {flat:.3f}; state {caches[long_].nbytes} bytes at both", flush=True)
    save('decode', dict(question='streaming decode vs full recompute; flatness', hardware=hw, config='em_ln', d=cfg.d, L=cfg.L,
                        vocab=cfg.vocab_size, prompt=prompt_len, new_tokens=new, stream_s=t_stream, stream_runs_s=ts,
                        full_recompute_s=t_full, identical_tokens=same, ratio=ratio, threshold=20.0,
                        latency={str(k): v for k, v in t.items()}, contexts=[short, long_], flatness=flat, flatness_threshold=1.3,
                        state_bytes=caches[long_].nbytes), args)
    assert same, 'streaming and full recompute generated different tokens'
    print(f"RESULT decode {new} tokens after {prompt_len}: streaming vs recompute {ratio:.1f}x {verdict(ratio, 20)}; "
          f"latency ctx {long_}/{short} {flat:.2f} {verdict(flat, 1.3, higher_is_better=False)}")


if __name__ == '__main__': main()
