"""The device check (issue 18): what only a GPU can tell, in one call of at most 8 minutes.

Run on a CUDA machine:  python bench/device_check.py              (JSON to bench/measured/device_check_cuda.json)
Check the script on a CPU:  python bench/device_check.py --device cpu --quick --out DIR   (tiny shapes; `make test`)

Sections, each timed against one wall-clock budget (`--budget-s`, default 420 s; a section that would start after the
budget is recorded as skipped, one that fails is recorded with its error, and the others still run):
1. train: training tokens/s (forward with loss, backward, clip 1.0, AdamW) under bf16 autocast for SPLM-MLP
   (`splm-multixi`: the multi-ξ base with the MLP potential, force by autograd.grad with create_graph), SPLM-SQ3
   (`splm-sq3`, closed-form force) and MatchedGPT, at the TinyStories scale-up shape d 256, L 8, B 16, T 512, GPT-2
   vocabulary, synthetic tokens; torch.compile off and on (on only where the trainer would compile: not for an
   autograd force, whose double backward torch.compile cannot trace; a compile that fails is recorded in its row and
   the eager figures stand); peak CUDA memory of each step. TF32 as the
   trainer sets it (`semsim.train.tf32_allowed`: off for the autograd force).
2. sq3: the SQ3 force (d 256, K_ξ 4, K_mix 8, B 4, T 512, fp32), closed form vs autograd.grad through the same V, and
   one training step of the SQ3 model both ways (bf16 autocast): the ratios autograd / closed form.
3. decode: per-token decode latency against the context, SPLM streaming (`splm-multixi`) vs MatchedGPT with its KV
   cache, batch 1, fp32, and the peak memory of each decoder's state.
4. tf32: the force (autograd.grad of the MLP potential) and the logits of `splm-multixi` in fp32 with TF32 on vs off,
   max relative difference, beside fp32 (TF32 off) vs float64 as the scale of ordinary round-off.
5. trainer: `semsim.train` end to end with a user's defaults (bf16 autocast; TF32 and torch.compile where valid):
   `splm-multixi` (eager, TF32 off) and `splm-sq3` (compiled) a few steps on a word-salad corpus, losses finite, the
   saved run loaded back onto the device, and its cached greedy decoding's logits against a full recompute.
Every figure is printed as one line `RESULT <section>.<name> <value> <unit>`; the JSON holds all of them, the shapes,
the hardware and each section's status. Exit status 1 when a section failed (its figures are missing) or a row inside
a section failed (a compiled training step, a non-finite trainer loss, cached decoding off recompute), else 0.
"""
import argparse, contextlib, json, math, os, statistics, sys, time, traceback
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import ROOT, MEASURED, RESULTS, hardware, train_step
from semsim.models import build_model, model_spec
from semsim.train import tf32_allowed
from semsim.lm import output_cache
from semsim.potentials import SQ3Potential
from semsim.streaming import splm_prefill, splm_decode_step

MODELS = {'splm_mlp': 'splm-multixi', 'splm_sq3': 'splm-sq3', 'matched_gpt': 'matched-gpt'}
FULL = dict(d=256, L=8, B=16, T=512, vocab=50257, n_head=8, steps=5, warmup=2,
            force=dict(B=4, T=512, d=256, K_xi=4, K_mix=8), step_B=4, contexts=[128, 512, 2048, 8192], decode_steps=16,
            tf32_B=2)
QUICK = dict(d=32, L=2, B=2, T=32, vocab=500, n_head=2, steps=2, warmup=1,
             force=dict(B=2, T=32, d=32, K_xi=4, K_mix=8), step_B=1, contexts=[8, 32], decode_steps=3, tf32_B=1)


class Check:
    "Collects figures: one RESULT line each, and the JSON tree."
    def __init__(self, budget_s:float):
        self.t0, self.budget_s, self.data, self.status = time.perf_counter(), budget_s, {}, {}
        self.row_errors = []   # '<section>.<row>' that failed inside a section that went on
    def elapsed(self) -> float: return time.perf_counter() - self.t0
    def figure(self, section:str, name:str, value, unit:str):
        self.data.setdefault(section, {})[name] = value
        v = f'{value:.6g}' if isinstance(value, float) else str(value)
        print(f'RESULT {section}.{name} {v} {unit}', flush=True)
    def run(self, section:str, fn, *args):
        "Run one section within the budget; record ok, skipped or the error."
        if self.elapsed() > self.budget_s:
            self.status[section] = f'skipped: budget of {self.budget_s:g} s spent'; print(f'{section}: {self.status[section]}'); return
        t = time.perf_counter()
        try: fn(self, *args); self.status[section] = 'ok'
        except Exception as e:
            self.status[section] = f'error: {type(e).__name__}: {e}'[:500]
            traceback.print_exc()
        print(f'{section}: {self.status[section]} ({time.perf_counter() - t:.1f} s)', flush=True)


def sync(dev:torch.device):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def reset_peak(dev:torch.device):
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)


def peak_bytes(dev:torch.device): # peak CUDA bytes allocated since reset_peak; None on a CPU (not measured here)
    return torch.cuda.max_memory_allocated(dev) if dev.type == 'cuda' else None


def median_time(fn, dev:torch.device, steps:int, warmup:int) -> float: # median seconds of one call
    "Median wall time of fn after warm-up calls, synchronised on the device."
    for _ in range(warmup): fn()
    ts = []
    for _ in range(steps):
        sync(dev); t = time.perf_counter(); fn(); sync(dev); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


@contextlib.contextmanager
def env(**kw):
    "Environment variables set for the duration of a block."
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update(kw)
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


def set_tf32(on:bool):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on


def make(key:str, S:dict, dev:torch.device, max_len:int):
    "One of the three models at the check's shape, on the device."
    torch.manual_seed(0)
    kw = dict(d=S['d'], L=S['L'], vocab_size=S['vocab'], max_len=max_len)
    if key == 'matched_gpt': kw['n_head'] = S['n_head']
    return build_model(MODELS[key], **kw).to(dev)


def train_step_fn(model, fwd, ids, amp):
    "A fresh AdamW and the trainer's step on it, as a callable of no arguments."
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    return lambda: train_step(model, opt, ids, fwd, amp)


def section_train(ck:Check, S:dict, dev:torch.device, quick:bool):
    amp = lambda: torch.autocast(dev.type, dtype=torch.bfloat16)
    ids = torch.randint(0, S['vocab'], (S['B'], S['T']), device=dev)
    rows = {}
    for key in MODELS:
        model = make(key, S, dev, S['T']).train()
        autograd_force = model_spec(MODELS[key]).autograd_force(model)
        tf32 = tf32_allowed(model_spec(MODELS[key]), model, dev)
        if dev.type == 'cuda': set_tf32(tf32)
        for compiled in (False, True):
            tag = f"{key}.{'compiled' if compiled else 'eager'}"
            if compiled and autograd_force:
                why = 'autograd force: double backward, the trainer keeps it eager'
                rows[tag] = dict(skipped=why); ck.data.setdefault('train', {})[f'{tag}.skipped'] = why
                print(f'{tag}: skipped ({why})'); continue
            # --quick traces the compiled path without code generation (aot_eager): it checks the script, not the speed
            backend = 'aot_eager' if quick else 'inductor'
            fwd = torch.compile(model, backend=backend) if compiled else model
            reset_peak(dev)
            try:
                t_first = time.perf_counter(); step = train_step_fn(model, fwd, ids, amp); step(); sync(dev)
                t_first = time.perf_counter() - t_first
                s = median_time(step, dev, S['steps'], S['warmup'] - 1)
            except Exception as e:   # a compile failure costs its own row, not the section's eager figures
                if not compiled: raise
                why = f'error: {type(e).__name__}: {e}'[:500]
                rows[tag] = dict(error=why); ck.data.setdefault('train', {})[f'{tag}.error'] = why
                traceback.print_exc(); print(f'{tag}: {why}', flush=True); ck.row_errors.append(f'train.{tag}')
                torch._dynamo.reset(); continue
            rows[tag] = dict(step_s=s, tokens_per_s=S['B'] * S['T'] / s, first_step_s=t_first, peak_bytes=peak_bytes(dev),
                             tf32=tf32, **({'backend': backend} if compiled else {}))
            ck.figure('train', f'{tag}.tokens_per_s', S['B'] * S['T'] / s, 'tokens/s')
            if dev.type == 'cuda': ck.figure('train', f'{tag}.peak_bytes', rows[tag]['peak_bytes'], 'bytes')
        del model, fwd
    for key in ('splm_mlp', 'splm_sq3'):
        ck.figure('train', f'{key}_over_gpt.eager', rows[f'{key}.eager']['tokens_per_s'] / rows['matched_gpt.eager']['tokens_per_s'], 'ratio')
    ck.data['train']['rows'] = rows
    if dev.type == 'cuda': set_tf32(True)


def section_sq3(ck:Check, S:dict, dev:torch.device, quick:bool):
    F_ = S['force']
    torch.manual_seed(0)
    pot = SQ3Potential(F_['K_xi'] * F_['d'], F_['d'], K_mix=F_['K_mix']).to(dev)
    xi, h = torch.randn(F_['B'], F_['T'], F_['K_xi'] * F_['d'], device=dev), torch.randn(F_['B'], F_['T'], F_['d'], device=dev)
    def force(closed):
        pot.closed_form = closed
        try: return pot.energy_and_force(xi, h)[1]
        finally: pot.closed_form = True
    err = ((force(True) - force(False)).abs().max() / force(False).abs().max()).item()
    tc, ta = (median_time(lambda c=c: force(c), dev, 3 * S['steps'], S['warmup']) for c in (True, False))
    ck.figure('sq3', 'force_closed_ms', 1e3 * tc, 'ms'); ck.figure('sq3', 'force_autograd_ms', 1e3 * ta, 'ms')
    ck.figure('sq3', 'force_ratio', ta / tc, 'autograd/closed'); ck.figure('sq3', 'force_max_rel_diff', err, 'relative')
    S2 = dict(S, B=S['step_B'])
    model = make('splm_sq3', S2, dev, S['T']).train()
    ids = torch.randint(0, S['vocab'], (S['step_B'], S['T']), device=dev)
    step = train_step_fn(model, model, ids, lambda: torch.autocast(dev.type, dtype=torch.bfloat16))
    def step_as(closed):
        model.V_theta.closed_form = closed
        try: step()
        finally: model.V_theta.closed_form = True
    sc, sa = (median_time(lambda c=c: step_as(c), dev, S['steps'], S['warmup']) for c in (True, False))
    ck.figure('sq3', 'step_closed_s', sc, 's'); ck.figure('sq3', 'step_autograd_s', sa, 's')
    ck.figure('sq3', 'step_ratio', sa / sc, 'autograd/closed')
    ck.data['sq3']['shape'] = dict(force=F_, step=dict(B=S['step_B'], T=S['T'], d=S['d'], L=S['L'], vocab=S['vocab']))


def section_decode(ck:Check, S:dict, dev:torch.device, quick:bool):
    Ts, n = S['contexts'], S['decode_steps']
    max_len = Ts[-1] + n + 8
    models = {k: make(k, S, dev, max_len).eval() for k in ('splm_mlp', 'matched_gpt')}
    ids = torch.randint(0, S['vocab'], (1, max_len), device=dev)
    rows = []
    for T in Ts:
        row = dict(T=T)
        for k, m in models.items():
            reset_peak(dev)
            if k == 'matched_gpt':
                with torch.no_grad(): cache = output_cache(m(ids[:, :T], use_cache=True, logits_to_keep=1))
            else: cache = splm_prefill(m, ids[:, :T], logits_to_keep=1)[1]
            pos = [T]
            def step():
                x = ids[:, pos[0]]
                if k == 'matched_gpt':
                    with torch.no_grad(): m(x[:, None], cache=cache, use_cache=True, logits_to_keep=1)
                else: splm_decode_step(m, cache, x)
                pos[0] += 1
            ms = 1e3 * median_time(step, dev, n, 2 if quick else 4)
            row[k] = dict(ms_per_token=ms, state_bytes=cache.nbytes, peak_bytes=peak_bytes(dev))
            ck.figure('decode', f'{k}.T{T}.ms_per_token', ms, 'ms')
            if dev.type == 'cuda': ck.figure('decode', f'{k}.T{T}.peak_bytes', row[k]['peak_bytes'], 'bytes')
        rows.append(row)
    ck.data['decode']['rows'] = rows


def section_tf32(ck:Check, S:dict, dev:torch.device, quick:bool):
    "TF32 on vs off for the autograd force; on a CPU TF32 does not exist, so both sides are fp32 (difference 0)."
    model = make('splm_mlp', S, dev, S['T']).train()
    ids = torch.randint(0, S['vocab'], (S['tf32_B'], S['T']), device=dev)
    with torch.no_grad(): h = model._ln(model.E(ids) + model.P[:S['T']])
    xi = model.context(h)
    def run(m, tf32, dtype=torch.float32):
        if dev.type == 'cuda': set_tf32(tf32)
        try:
            f = m.V_theta.energy_and_force(xi.to(dtype), h.to(dtype), create_graph=True)[1].detach()
            logits = m(ids).logits.detach()
            return f, logits
        finally:
            if dev.type == 'cuda': set_tf32(True)
    rel = lambda a, b: ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
    f_off, l_off = run(model, False)
    f_on, l_on = run(model, True)
    m64 = make('splm_mlp', S, dev, S['T']).double().train()
    f64, l64 = run(m64, False, torch.float64)
    ck.figure('tf32', 'force_rel_diff_tf32_on_vs_off', rel(f_on, f_off), 'relative')
    ck.figure('tf32', 'logits_rel_diff_tf32_on_vs_off', rel(l_on, l_off), 'relative')
    ck.figure('tf32', 'force_rel_diff_fp32_vs_fp64', rel(f_off, f64), 'relative')
    ck.figure('tf32', 'logits_rel_diff_fp32_vs_fp64', rel(l_off, l64), 'relative')
    ck.figure('tf32', 'force_rel_diff_tf32_vs_fp64', rel(f_on, f64), 'relative')


TRAINER = dict(full=dict(d=64, L=2, batch_size=8, block_size=64, steps=12),
               quick=dict(d=16, L=2, batch_size=2, block_size=16, steps=3))
TRAINER_MODELS = ('splm-multixi', 'splm-sq3')   # one eager with TF32 off (autograd force), one compiled with TF32 on
REL_TOL_DECODE = 1e-2   # cached decoding vs recompute, relative: loose enough for TF32 matmuls (~1e-3), tight for a bug


def section_trainer(ck:Check, S:dict, dev:torch.device, quick:bool):
    "The trainer end to end on the device, defaults as a user gets them (bf16 autocast, TF32 and compile where valid)."
    import random, tempfile
    from semsim.train import make_config, train, load_run, read_log
    Z = TRAINER['quick' if quick else 'full']
    words = 'the king and queen of a small city walked through the old market at night while soldiers sang'.split()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / 'salad.txt'
        corpus.write_text('\n'.join(' '.join(rng.choice(words) for _ in range(10)) + '.' for _ in range(600)))
        for name in TRAINER_MODELS:
            out, tag = Path(tmp) / name, name.replace('-', '_')
            cfg = make_config('smoke', model=name, corpus=str(corpus), compact_vocab=True, d=Z['d'], L=Z['L'],
                              batch_size=Z['batch_size'], block_size=Z['block_size'], max_steps=Z['steps'], warmup=1,
                              eval_every=Z['steps'], eval_iters=2, ckpt_every=Z['steps'], device=dev.type, threads=0,
                              progress=False, out=str(out))
            t = time.perf_counter()
            with env(SEMSIM_CACHE_DIR=str(Path(tmp) / 'cache')): summary = train(cfg)
            wall = time.perf_counter() - t
            log = read_log(out / 'log.jsonl')
            finite = all(math.isfinite(r['loss']) for r in log) and math.isfinite(log[-1]['val_loss'])
            ck.figure('trainer', f'{tag}.wall_s', wall, 's'); ck.figure('trainer', f'{tag}.finite', finite, 'bool')
            ck.figure('trainer', f'{tag}.val_loss', log[-1]['val_loss'], 'nats')
            ck.data['trainer'][f'{tag}.how'] = dict(compile=summary.get('compile'), amp=summary.get('amp'),
                                                     tf32=bool(torch.backends.cuda.matmul.allow_tf32) if dev.type == 'cuda' else None)
            model = load_run(out)[0].to(dev)            # the saved run, back on the device: cached decoding = recompute
            ids = torch.randint(0, model.config.vocab_size, (2, 8), device=dev)
            g = model.generate(ids, use_cache=True, max_new_tokens=Z['block_size'] - 8, do_sample=False,
                               output_logits=True, return_dict_in_generate=True)
            cached = torch.stack(g.logits, 1).double()                    # (B, new, V): the decoder's logits
            with torch.no_grad(): full = model(g.sequences).logits[:, 7:-1].double()   # the same positions, recomputed
            rel = ((cached - full).abs().max() / full.abs().max()).item()
            ck.figure('trainer', f'{tag}.cached_vs_recompute_logits_rel_diff', rel, 'relative')
            if not (finite and rel < REL_TOL_DECODE): ck.row_errors.append(f'trainer.{tag}')


SECTIONS = {'train': section_train, 'sq3': section_sq3, 'decode': section_decode, 'tf32': section_tf32,
            'trainer': section_trainer}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--quick', action='store_true', help='tiny shapes, compile traced with aot_eager: checks the script (figures not meaningful)')
    p.add_argument('--out', type=Path, default=None, help='folder for the JSON (default bench/measured/ for a full CUDA run, else bench/results/)')
    p.add_argument('--budget-s', type=float, default=420.0, help='no section starts after this many seconds (default 420, inside 8 minutes)')
    p.add_argument('--only', default=','.join(SECTIONS), help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    args = p.parse_args(argv)
    only = [s for s in args.only.split(',') if s]
    bad = [s for s in only if s not in SECTIONS]
    if bad: p.error(f"unknown section(s) {', '.join(bad)}; known: {', '.join(SECTIONS)}")
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('CUDA requested but not available on this machine: nothing measured (use --device cpu --quick to check the script)')
        return 2
    if args.budget_s <= 0: p.error(f'--budget-s must be positive, got {args.budget_s}')
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    S = QUICK if args.quick else FULL
    out = args.out or (MEASURED if args.device == 'cuda' and not args.quick else RESULTS)
    if args.quick and out.resolve() == MEASURED.resolve(): p.error('--quick figures are not meaningful: they never go to bench/measured/')
    hw = hardware()
    print('hardware:', json.dumps(hw), flush=True)
    ck = Check(args.budget_s)
    for s in only: ck.run(s, SECTIONS[s], S, dev, args.quick)
    res = dict(question='what only a GPU can tell: bf16 training tokens/s with and without compile, SQ3 ratios, decode '
                        'latency against context, peak memory, TF32 and the autograd force',
               hardware=hw, device=args.device, quick=args.quick, shape={k: v for k, v in S.items()}, models=MODELS,
               status=ck.status, row_errors=ck.row_errors, wall_s=ck.elapsed(), budget_s=args.budget_s, **ck.data)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f'device_check_{args.device}.json'
    path.write_text(json.dumps(res, indent=1))
    print(f'results: {path}')
    failed = [k for k, v in ck.status.items() if v.startswith('error')] + ck.row_errors
    if ck.row_errors: print(f"rows that failed (their sections' other figures stand): {', '.join(ck.row_errors)}")
    print(f"sections: {', '.join(f'{k} {v}' for k, v in ck.status.items())}; {ck.elapsed():.0f} s")
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main())
