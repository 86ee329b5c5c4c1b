# %% [markdown]
# # Command line
#
# > The `semsim` command: one entry point with a subcommand per job (`demo`, `data`, and the training and analysis jobs of later chapters).

# %%
#| default_exp cli

# %% [markdown]
# Installing semsim puts a `semsim` command on the PATH (`console_scripts` in `settings.ini`). Each subcommand is a
# thin shell over a library function documented in its own chapter, so everything the command line does can also be
# done from Python. Subcommands register themselves in `COMMANDS` with a function that adds their arguments and a
# function that runs them; the heavy modules they need are imported only when that subcommand runs, so
# `semsim --help` is instant.
#
# | subcommand | what it does | chapter |
# |---|---|---|
# | `semsim demo` | the main job (`make demo`): corpus statistics, then an SPLM and MatchedGPT trained side by side on Tiny Shakespeare, their validation perplexities, causal probes, samples and plots | this one, Training |
# | `semsim train --preset P --model M --set k=v --out DIR [--resume]` | train any semsim model from a preset | Training |
# | `semsim data [CORPUS]` | corpus statistics and a sample batch decoded back to text | Data |
# | `semsim analyze stp --model M --corpus FILE --out DIR` | the STP–acceleration study of a model's hidden-state trajectories: JSON of every statistic + figures | STP and acceleration |

# %%
#| export
from __future__ import annotations
import argparse, json, sys
from typing import Callable, Optional, Sequence

# %%
#| hide
from fastcore.test import test_eq, test_fail
import contextlib, io, tempfile
from pathlib import Path

# %% [markdown]
# ## The registry

# %%
#| export
COMMANDS = {}  # name -> (help, add_arguments(parser), run(args) -> exit code)

def command(name:str, help:str, add_arguments:Callable=lambda p: None):
    "Register `run(args) -> int` as the subcommand `semsim NAME`."
    def deco(run):
        COMMANDS[name] = (help, add_arguments, run)
        return run
    return deco

def build_parser() -> argparse.ArgumentParser:
    "The `semsim` argument parser with every registered subcommand."
    from semsim import __version__
    p = argparse.ArgumentParser(prog='semsim', description='Semantic Simulation: tokens as particles under a learned scalar energy.')
    p.add_argument('--version', action='version', version=f'semsim {__version__}')
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    for name, (help, add, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help, description=help)
        add(sp)
    return p

FORWARDED = {'train': 'semsim.train'}  # subcommands whose arguments are parsed by their module's own main(argv)

def main(argv:Optional[Sequence[str]]=None) -> int: # arguments; default sys.argv[1:]
    "Entry point of the `semsim` command."
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        import importlib
        return int(importlib.import_module(FORWARDED[argv[0]]).main(argv[1:]) or 0)
    p = build_parser()
    args = p.parse_args(argv)
    if not args.command: p.print_help(); return 2
    try: return int(COMMANDS[args.command][2](args) or 0)
    except (OSError, ValueError, ImportError) as e:  # OSError covers missing files, folders, offline downloads
        print(f"semsim {args.command}: error: {e}", file=sys.stderr)
        return 1


# %% [markdown]
# ## `semsim data`: corpus statistics
#
# Tokenizes a corpus (cached after the first call), prints its statistics (`semsim.data.corpus_stats`) and a sample
# batch drawn with `get_batch`, decoded back to text. `--json` prints the statistics as JSON instead.

# %%
#| export
def _add_data_args(p):
    p.add_argument('corpus', nargs='?', default='tinyshakespeare', help="'tinyshakespeare', 'tinystories' or a path to a UTF-8 text file")
    p.add_argument('--val-frac', type=float, default=0.05, help='fraction of tokens (the last ones) held out for validation')
    p.add_argument('--batch-size', type=int, default=2, help='rows in the sample batch')
    p.add_argument('--block-size', type=int, default=48, help='tokens per sample row')
    p.add_argument('--seed', type=int, default=0, help='seed of the sample batch')
    p.add_argument('--json', action='store_true', help='print the statistics as JSON only')

def print_corpus_report(stats:dict, sample_rows:Sequence[str], file=None):
    "Human-readable corpus statistics and decoded sample rows."
    file = file or sys.stdout
    w = lambda *a: print(*a, file=file)
    w(f"corpus            {stats['corpus']}")
    w(f"size              {stats['bytes']:,} bytes, {stats['characters']:,} characters, {stats['lines']:,} lines")
    w(f"tokens (GPT-2)    {stats['tokens']:,}  ({stats['chars_per_token']:.2f} characters per token)")
    w(f"split             train {stats['train_tokens']:,} / val {stats['val_tokens']:,}")
    w(f"vocabulary        {stats['train_types']:,} of {stats['vocab_size']:,} token types seen in train")
    w(f"surprisal (nats)  min {stats['surprisal_min']:.3f}  max {stats['surprisal_max']:.3f}  "
      f"mean {stats['surprisal_mean']:.3f}  median {stats['surprisal_median']:.3f}")
    w(f"sample batch      {len(sample_rows)} windows, decoded:")
    for i, r in enumerate(sample_rows): w(f"  [{i}] {r!r}")

@command('data', 'Corpus statistics and a sample batch decoded back to text.', _add_data_args)
def run_data(args) -> int:
    import torch
    from semsim.data import corpus_stats, tokenize_corpus, get_batch, gpt2_tokenizer
    stats = corpus_stats(args.corpus, args.val_frac)
    if args.json: print(json.dumps(stats, indent=1)); return 0
    train, _ = tokenize_corpus(args.corpus, args.val_frac)
    x, _ = get_batch(train, args.batch_size, args.block_size, torch.Generator().manual_seed(args.seed))
    print_corpus_report(stats, gpt2_tokenizer().decode_batch(x))
    return 0


# %% [markdown]
# ## `semsim train`: training
#
# `semsim train ...` hands its arguments to `semsim.train.main` (chapter *Training*), which defines them: presets,
# `--model`, `--set key=value`, `--max-steps`, `--out`, `--resume`. The module is imported only when the subcommand
# runs.

# %%
#| export
@command('train', 'Train a semsim model: presets, --set overrides, atomic checkpoints, --resume (semsim train --help).',
         lambda p: p.add_argument('args', nargs=argparse.REMAINDER, help='arguments of semsim.train'))
def run_train_command(args) -> int:
    from semsim.train import main as train_main
    return train_main(args.args)


# %% [markdown]
# ## `semsim demo`: the main job
#
# `make demo` runs `semsim demo`. It prints the corpus statistics and a decoded sample batch of Tiny Shakespeare
# (chapter *Data*), then trains two models side by side with the `demo` preset of the *Training* chapter: the multi-ξ
# SPLM (4-channel EMA context, LayerNorm after each step, logfreq mass, γ = 0.30) and MatchedGPT of the same width
# and depth, each in its own process with one CPU thread, on the same windows. The preset is CPU-sized (d 64, 4
# steps/blocks, 1200 steps of 8 × 64 tokens) and uses the **compact vocabulary** (the corpus's 11,706 token types), a
# deviation from the reference that makes the perplexities not comparable with its 50,257-way numbers. Then it
# prints both validation perplexities side by side, runs the causal probe on each trained model, samples a
# continuation of the same prompt from each and writes the plots: `OUT/loss_curves.png` (both runs) and each run's
# `loss_curve.png` and `summary.md`. `--max-steps` shortens it, `--set key=value` changes both runs, `--sequential`
# trains in this process one after the other. A previous demo in `OUT` is replaced.

# %%
#| export
DEMO_MODELS = ('splm-multixi', 'matched-gpt')  # the two families the demo compares

def _add_demo_args(p):
    p.add_argument('--corpus', default='tinyshakespeare', help='corpus name or path')
    p.add_argument('--out', default='runs/demo', help='folder for the two runs and the plots')
    p.add_argument('--max-steps', type=int, help="shorten the demo preset's 1200 steps")
    p.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE', help='override a training field of both runs')
    p.add_argument('--prompt', default='ROMEO:', help='prompt of the samples')
    p.add_argument('--sample-tokens', type=int, default=60, help='tokens sampled from each model')
    p.add_argument('--sequential', action='store_true', help='train one after the other in this process')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')

def _fresh_run_folder(path):
    "Remove a previous semsim run in `path` (a folder holding train_config.json); refuse anything else."
    import shutil
    from pathlib import Path
    p = Path(path)
    if not p.exists(): return
    if not (p/'train_config.json').exists(): raise ValueError(f"{p} exists and is not a semsim run: choose another --out")
    shutil.rmtree(p)

# %%
#| export
def _report_demo(args, cfgs:list, sums:list):
    "The demo's report: perplexities beside the reference's, the causal probe of each trained model, samples."
    from semsim.train import load_run, sample
    from semsim.causal import causal_probe
    print('\n== validation perplexity (same fixed validation windows) ==')
    print(f"{'model':14s} {'params':>10s} {'steps':>6s} {'val CE':>8s} {'val PPL':>9s} {'best PPL':>9s} {'train s':>8s} {'tok/s':>7s}")
    for s in sums:
        print(f"{s['model']:14s} {s['params']:>10,} {s['steps']:>6} {s['val_loss']:>8.4f} {s['val_ppl']:>9.2f} "
              f"{s['best_val_ppl']:>9.2f} {s['elapsed_s']:>8.0f} {s['tokens_per_s']:>7,.0f}")
    print('reference (full recipe, 50,257-way BPE, d 128, L 8, 4000 steps of 16 x 128): SPLM em_ln 173.59, MatchedGPT 149.80 ± 7.21')
    print('\n== causal probe of the trained models ==')
    models = [load_run(c.out) for c in cfgs]
    for c, (m, codec, _) in zip(cfgs, models):
        r = causal_probe(m, T=32, t_pert=20)
        print(f"{c.model:14s} {'PASSED' if r.passed else 'FLAGGED'}: Δ_pre {r.delta_pre:.1e} (Δ_post {r.delta_post:.1e}), "
              f"Δ_grad {r.grad_delta:.1e} (|g_self| {r.grad_self:.1e})")
    print(f'\n== samples (prompt {args.prompt!r}, {args.sample_tokens} tokens, temperature 0.8, top-k 40) ==')
    for c, (m, codec, _) in zip(cfgs, models):
        print(f'--- {c.model}:'); print(sample(m, codec, args.prompt, args.sample_tokens, seed=0))

# %%
#| export
@command('demo', 'The main job: corpus statistics, then an SPLM and MatchedGPT trained side by side on Tiny Shakespeare.', _add_demo_args)
def run_demo(args) -> int:
    import time
    from pathlib import Path
    t0 = time.time()
    print('== semsim demo: the data layer ==')
    rc = run_data(argparse.Namespace(corpus=args.corpus, val_frac=0.05, batch_size=2, block_size=48, seed=0, json=False))
    if rc: return rc
    import matplotlib
    if 'matplotlib.pyplot' not in sys.modules: matplotlib.use('Agg')
    from semsim.train import make_config, train_together, plot_runs, CausalLeakError, NonFiniteError
    over = {'max_steps': args.max_steps} if args.max_steps else {}
    cfgs = [make_config('demo', args.sets, model=m, corpus=args.corpus, out=str(Path(args.out)/m), **over) for m in DEMO_MODELS]
    for c in cfgs: _fresh_run_folder(c.out)
    c = cfgs[0]
    print(f"\n== training {' and '.join(DEMO_MODELS)} {'one after the other' if args.sequential else 'side by side (one process, one thread each)'} ==")
    print(f"preset 'demo': d {c.model_args['d']}, L {c.model_args['L']}, {c.max_steps} steps of {c.batch_size} x {c.block_size} tokens, lr {c.lr}, "
          f"compact vocabulary (deviates from the reference's 50,257-way BPE)")
    try: sums = train_together(cfgs, parallel=not args.sequential, progress=not args.no_progress)
    except CausalLeakError as e: print(f'semsim demo: refused: {e}', file=sys.stderr); return 2
    except NonFiniteError as e: print(f'semsim demo: stopped: {e}', file=sys.stderr); return 3
    _report_demo(args, cfgs, sums)
    png = Path(args.out)/'loss_curves.png'
    plot_runs([c.out for c in cfgs], png, title=f"demo on {args.corpus}: " + ', '.join(f"{s['model']} {s['val_ppl']:.1f}" for s in sums))
    print(f"\n== plots: {png}, " + ', '.join(f'{c.out}/loss_curve.png' for c in cfgs) + f"; summaries: {', '.join(f'{c.out}/summary.md' for c in cfgs)}")
    print(f'semsim demo: done in {time.time() - t0:.0f} s')
    return 0

# %% [markdown]
# ## `semsim analyze`: trajectory analyses
#
# `semsim analyze stp --model gpt2 --corpus FILE --out DIR` reads the hidden-state trajectories of a model on a corpus
# (chapter *Trajectories*) and runs the STP–acceleration study (chapter *STP and acceleration*,
# `semsim.stp.analyze_stp`): it writes `DIR/stp_stats.json` with every statistic (identity errors, acceleration
# statistics, permutation null, random-triplet STP, well fit, action) and the figures `stp_acceleration.png`,
# `stp_identity.png`, `stp_null.png`, and prints the headline numbers. `--model` is a Hub name (`gpt2`,
# `EleutherAI/pythia-160m`) or a folder written by `save_pretrained`; `--corpus` defaults to
# `$SEMSIM_DATA_DIR/stp_corpus_50.json`. A model that cannot be loaded offline, a missing corpus or malformed JSON give
# a one-line error and exit status 1. The analysis name is a positional argument so that later analyses can join it.
#
# `semsim analyze separator --model M --corpus FILE --out DIR [--axis depth|token] [--capacity-sweep] [--jacobian] [--pair]`
# runs the shared-potential separator (chapter *The shared-potential separator*, `semsim.separator.analyze_separator`)
# on the reference's 40/10 split of the corpus and writes `DIR/separator.json` and `separator_profile.png`; for a
# semsim SPLM it adds the oracle fit. `M` may also be a semsim run folder (`semsim train --out`), opened with its own
# vocabulary.
#
# `semsim analyze retrofit ...` runs the conservative retro-fit menu E1–E5 (chapter *The conservative retro-fit menu*)
# and writes `retrofit.json` and `retrofit_menu.png`; `semsim analyze markov-order ...` runs the Markov-order test
# (chapter *The Markov-order test*) and writes `markov_order.json` and `markov_order.png`. For semsim SPLMs,
# `semsim analyze energy` writes `energy.json` and `energy.png` (chapter *Reading the mechanics*) and
# `semsim analyze attractors --prompts FILE` writes `attractors.json` and `attractors.png` (chapter *Attractors and basins*).

# %%
#| export
ANALYSES = ('stp', 'separator', 'retrofit', 'markov-order', 'energy', 'attractors')  # the analyses `semsim analyze` knows

def _add_analyze_args(p):
    p.add_argument('analysis', choices=ANALYSES, help='which analysis to run')
    p.add_argument('--model', required=True, help="Hub name (gpt2, EleutherAI/pythia-160m), a folder written by save_pretrained, or a semsim run folder")
    p.add_argument('--corpus', default=None, help='JSON {"domains": {name: [sentences]}}, a JSON list or a text file with one sentence per line (default: $SEMSIM_DATA_DIR/stp_corpus_50.json)')
    p.add_argument('--out', required=True, help='output folder for the JSON (stp_stats.json / separator.json) and the PNG figures')
    p.add_argument('--tokenizer', default='auto', help="'auto' (the model's), 'gpt2', or a Hub name / folder")
    p.add_argument('--layer', type=int, default=-1, help='hidden_states index of the token-axis trajectory (-1: last, post-final-norm)')
    p.add_argument('--states', choices=['h', 'prenorm', 'postnorm'], default='h',
                   help="'h': hidden_states[layer] (the reference's); 'prenorm' / 'postnorm': the input / output of the final norm")
    p.add_argument('--n-perm', type=int, default=100, help='permutation-null shuffles')
    p.add_argument('--n-random', type=int, default=500, help='random triples per sentence for the random-triplet STP')
    p.add_argument('--seed', type=int, default=42, help='seed of the null and the random triplets')
    p.add_argument('--max-length', type=int, default=None, help='truncation, in tokens (default: 256 for stp, 64 for separator)')
    p.add_argument('--device', default='cpu', help="'cpu', 'cuda', ...")
    p.add_argument('--dtype', default='float32', help='float32, float16 or bfloat16')
    _add_analysis_options(p)

# %%
#| export
def _add_analysis_options(p):
    "Options of the separator, retro-fit and Markov-order analyses."
    g = p.add_argument_group('separator')
    g.add_argument('--axis', choices=['depth', 'token'], default='depth', help='separator: layer index (depth) or token index (token) as time')
    g.add_argument('--steps', type=int, default=4000, help='separator: AdamW steps of the V_psi fit')
    g.add_argument('--hidden', type=int, default=256, help='separator: V_psi width')
    g.add_argument('--depth', type=int, default=2, help='separator: V_psi hidden layers')
    g.add_argument('--capacity-sweep', action='store_true', help='separator: also the six-size V_psi capacity sweep (3000 steps each)')
    g.add_argument('--substack', action='store_true', help='separator: the sub-stack test on a hybrid (automatic when the model has a schedule)')
    g.add_argument('--jacobian', action='store_true', help='separator: also the velocity-aware Jacobian-symmetry test at PCA-16')
    g.add_argument('--pair', action='store_true', help='separator: also the generalised pair test (a learned pair potential over each prefix)')
    g.add_argument('--pair-hidden', type=int, default=64, help='separator: width of the pair potential V_psi^2 (with --pair)')
    g = p.add_argument_group('retrofit and markov-order')
    g.add_argument('--mass', choices=['auto', 'attention', 'model', 'one'], default='auto',
                   help="retrofit: per-token mass (auto: an SPLM's own, else attention received, else 1)")
    g.add_argument('--n-boot', type=int, default=10_000, help='markov-order: sentence-cluster bootstrap resamples')
    g.add_argument('--pca', type=int, default=50, help='markov-order: PCA components p')
    _add_mechanics_options(p)

# %%
#| export
def _add_mechanics_options(p):
    "Options of the energy and attractor analyses."
    g = p.add_argument_group('energy and attractors (semsim SPLMs)')
    g.add_argument('--prompts', default=None, help='attractors: JSON {name: text}, a JSON list or one prompt per line (default: the reference five)')
    g.add_argument('--modes', default='dynamical,gradient', help='attractors: dynamical and/or gradient, comma-separated')
    g.add_argument('--n-seeds', type=int, default=96, help='attractors: seeds of each kind (Gaussian, embedding rows, noisy real states)')
    g.add_argument('--n-steps', type=int, default=128, help='attractors: dynamical-mode integration steps')

def _analysis_model(name:str, tokenizer:str):
    "(model or name, tokenizer): a semsim run folder is opened with its own vocabulary; anything else is left to load_model."
    from pathlib import Path
    p = Path(name)
    if p.is_dir() and (p/'train_config.json').exists():
        from semsim.train import load_run
        model, codec, _ = load_run(p)
        return model, (codec if tokenizer == 'auto' else tokenizer)
    return name, tokenizer

def _run_separator(args) -> int:
    import numpy as np
    from semsim.separator import analyze_separator
    model, tok = _analysis_model(args.model, args.tokenizer)
    r = analyze_separator(model, args.corpus, args.out, tokenizer=tok, axis=args.axis, steps=args.steps, hidden=args.hidden,
                          depth=args.depth, capacity=args.capacity_sweep, jacobian=args.jacobian, substack=args.substack or None,
                          pair=args.pair, pair_hidden=args.pair_hidden,
                          max_length=args.max_length or 64,
                          label=args.model)
    f = r['fit']
    print(f"{args.model}: {args.axis}-axis separator, median TEST R² {f['median_r2']:.3f} (velocity only "
          f"{float(np.median(f['r2_velocity_only'])):.3f}), pooled {f['pooled_r2']:.3f}, {f['profile']}")
    if 'oracle' in r: print(f"oracle: min R² {min(r['oracle']['r2']):.6f}, α {np.mean(r['oracle']['alpha']):.4f}, β {np.mean(r['oracle']['beta']):.4f}")
    if 'pair' in r: print(f"pair test: median TEST R² {r['pair']['median_r2']:.3f} with the pair term, {r['pair']['median_r2_shared']:.3f} one-body alone")
    if 'jacobian' in r: print(f"Jacobian symmetry: max gap {r['jacobian']['max_gap']:.3f} ({'pass' if r['jacobian']['passed'] else 'FAIL'})")
    for sg in r.get('substack', {}).get('segments', []): print(f"sub-stack {sg['kind']} blocks {sg['blocks'][0]}-{sg['blocks'][1]}: median TEST R² {sg['median_r2']:.3f}")
    print(f"wrote {args.out}/separator.json and separator_profile.png")
    return 0

# %%
#| export
def _run_retrofit(args) -> int:
    from semsim.retrofit import retrofit_menu
    model, tok = _analysis_model(args.model, args.tokenizer)
    r = retrofit_menu(model, args.corpus, args.out, tokenizer=tok, max_length=args.max_length or 64, mass=args.mass, label=args.model)
    best = min(r['E1'], key=lambda x: x['median'])
    print(f"{args.model}: static null {r['null']['all']:.4f} (TEST {r['null']['test']:.4f}); E1 best γ {best['gamma']:g} -> {best['median']:.4f}; "
          f"E4 TEST gaussian/skew/full {r['E4']['gaussian']['test_median']:.4f}/{r['E4']['skew']['test_median']:.4f}/{r['E4']['full']['test_median']:.4f}; "
          f"mass {r['mass_rule']}")
    print(f"wrote {args.out}/retrofit.json and retrofit_menu.png")
    return 0

def _run_markov(args) -> int:
    from semsim.markov_order import analyze_markov_order
    model, tok = _analysis_model(args.model, args.tokenizer)
    r = analyze_markov_order(model, args.corpus, args.out, tokenizer=tok, layer=args.layer, max_length=args.max_length or 64,
                             p=args.pca, n_boot=args.n_boot, label=args.model)
    print(f"{args.model}: R1 {r['R1']:.4g}, R2 {r['R2']:.4g}, ρ12 {r['rho12']:.4f}, p {r['p12']:.3g}, "
          f"95% CI of R1-R2 [{r['ci_diff'][0]:.4g}, {r['ci_diff'][1]:.4g}] -> decision {r['decision']}")
    print(f"wrote {args.out}/markov_order.json and markov_order.png")
    return 0

# %%
#| export
def _run_energy(args) -> int:
    from semsim.mechanics import analyze_energy
    model, tok = _analysis_model(args.model, args.tokenizer)
    r = analyze_energy(model, args.corpus, args.out, tokenizer=tok, max_length=args.max_length or 64, label=args.model)
    print(f"{args.model}: H from {r['H'][0]:.4g} to {r['H'][-1]:.4g}, slope {r['slope']:.4g}/layer "
          f"(95% CI [{r['slope_ci'][0]:.4g}, {r['slope_ci'][1]:.4g}]), bandwidth {r['bandwidth']:.4g}, ratio {r['ratio']:.1%}")
    print(f"wrote {args.out}/energy.json and energy.png")
    return 0

def _run_attractors(args) -> int:
    import numpy as np
    from semsim.attractors import analyze_attractors
    model, tok = _analysis_model(args.model, args.tokenizer)
    r = analyze_attractors(model, args.prompts, args.out, tokenizer=tok, label=args.model, modes=tuple(args.modes.split(',')),
                           n_seeds=args.n_seeds, n_steps=args.n_steps)
    for mode, v in r['modes'].items():
        print(f"{mode}: K* " + ', '.join(f"{p} {x['k_star']}" for p, x in v.items()) +
              f"; content basins {np.mean([x['content_fraction'] for x in v.values()]):.0%}")
    print(f"wrote {args.out}/attractors.json and attractors.png")
    return 0

# %%
#| export
@command('analyze', 'Trajectory analyses of a model: `semsim analyze stp|separator|retrofit|markov-order|energy|attractors --model M --out DIR`.', _add_analyze_args)
def run_analyze(args) -> int:
    import matplotlib
    if 'matplotlib.pyplot' not in sys.modules: matplotlib.use('Agg')  # files only: no display needed
    import transformers
    transformers.logging.disable_progress_bar()  # keep stderr for errors: one line each
    runs = {'separator': _run_separator, 'retrofit': _run_retrofit, 'markov-order': _run_markov, 'energy': _run_energy, 'attractors': _run_attractors}
    if args.analysis != 'stp': return runs[args.analysis](args)
    from semsim.stp import analyze_stp
    st = analyze_stp(args.model, args.corpus, args.out, tokenizer=args.tokenizer, layer=args.layer, which=args.states,
                     n_perm=args.n_perm, seed=args.seed, n_random=args.n_random, max_length=args.max_length or 256,
                     device=args.device, dtype=args.dtype)
    h = st['headline']
    print(f"{st['model']}: {h['n_triplets']:,} triplets in {st['n_trajectories']} sentences; "
          f"|a_par|/|a_perp| {h['ratio']:.3f}; decelerating {h['frac_decel']:.1%}; "
          f"z |a_par| {h['z_abs_a_par']:.2f}, z |a_perp| {h['z_a_perp']:.2f}; identity max error {h['identity_max_abs']:.1e}")
    print(f"wrote {args.out}/stp_stats.json and stp_acceleration.png, stp_identity.png, stp_null.png")
    return 0


# %% [markdown]
# ## Examples and tests
#
# The command prints the statistics the Data chapter asserts:

# %%
buf = io.StringIO()
with contextlib.redirect_stdout(buf): rc = main(['data', 'tinyshakespeare'])
out = buf.getvalue(); print(out)
test_eq(rc, 0)
assert 'train 321,124 / val 16,901' in out and '11,482 of 50,257' in out

# %%
buf = io.StringIO()
with contextlib.redirect_stdout(buf): main(['data', '--json'])
test_eq(json.loads(buf.getvalue())['train_tokens'], 321_124)

# %% [markdown]
# Errors are reported in one line naming the problem, with exit status 1, not as a traceback:

# %%
err = io.StringIO()
with contextlib.redirect_stderr(err): rc = main(['data', '/no/such/corpus.txt'])
test_eq(rc, 1); print(err.getvalue())
assert 'corpus file not found' in err.getvalue()

# %% [markdown]
# `semsim analyze stp` on a small random GPT-2 saved to a folder (the CI stand-in of the Trajectories chapter) and
# three sentences; then its one-line errors. The full 50-sentence run is in `tests/test_analyze_cli.py`.

# %%
from semsim.trajectories import load_model, tiny_gpt2_config

# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d); load_model(tiny_gpt2_config()).save_pretrained(d/'model')
    (d/'corpus.json').write_text(json.dumps(['The cat sat on the mat.', 'Two plus two is four.', 'Hello there, how are you?']))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): rc = main(['analyze', 'stp', '--model', str(d/'model'), '--corpus', str(d/'corpus.json'),
                                                     '--out', str(d/'out'), '--n-perm', '10', '--n-random', '20'])
    print(buf.getvalue()); test_eq(rc, 0)
    test_eq(sorted(p.name for p in (d/'out').iterdir()), ['stp_acceleration.png', 'stp_identity.png', 'stp_null.png', 'stp_stats.json'])
    test_eq(json.loads((d/'out'/'stp_stats.json').read_text())['n_trajectories'], 3)
    (d/'bad.json').write_text('{"domains": ')
    for argv, msg in [(['--model', str(d/'model'), '--corpus', str(d/'missing.json')], 'corpus file not found'),
                      (['--model', str(d/'model'), '--corpus', str(d/'bad.json')], 'not valid JSON'),
                      (['--model', str(d/'no-model'), '--corpus', str(d/'corpus.json')], 'model folder not found')]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err): rc = main(['analyze', 'stp', *argv, '--out', str(d/'out2')])
        test_eq(rc, 1); assert msg in err.getvalue() and err.getvalue().count('\n') == 1, err.getvalue()
print(err.getvalue())

# %% [markdown]
# `semsim analyze separator` on the same tiny GPT-2 and the real corpus (a short fit: `--steps 40`); its full tests,
# a semsim run folder with the oracle among them, are in `tests/test_separator_cli.py`:

# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d); load_model(tiny_gpt2_config()).save_pretrained(d/'model')
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): rc = main(['analyze', 'separator', '--model', str(d/'model'), '--out', str(d/'sep'),
                                                     '--steps', '40', '--hidden', '16'])
    print(buf.getvalue()); test_eq(rc, 0)
    test_eq(sorted(p.name for p in (d/'sep').iterdir()), ['separator.json', 'separator_profile.png'])

# %%
test_eq(sorted(COMMANDS), ['analyze', 'data', 'demo', 'train'])
with contextlib.redirect_stderr(io.StringIO()):
    try: main(['no-such-command']); raise AssertionError('an unknown subcommand must not run')
    except SystemExit as e: test_eq(e.code, 2)  # argparse's usage error

# %% [markdown]
# `semsim train` is `semsim.train.main` (its own tests are in the Training chapter and `tests/test_train_*.py`):

# %%
buf = io.StringIO()
with contextlib.redirect_stdout(buf): test_eq(main(['train', '--list']), 0)
assert 'tinystories-16k' in buf.getvalue() and 'splm-multixi' in buf.getvalue()
buf = io.StringIO()
with contextlib.redirect_stdout(buf): test_eq(main(['train', '--preset', 'shakespeare', '--print-config']), 0)
test_eq(json.loads(buf.getvalue())['max_steps'], 4000)

# %% [markdown]
# The demo, shortened to 3 steps per model and trained in this process (the full run is measured below): the data
# report, both runs, two passed probes, two samples and the plots.

# %%
with tempfile.TemporaryDirectory() as d:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(['demo', '--max-steps', '3', '--set', 'eval_iters=2', '--sequential', '--no-progress',
                   '--sample-tokens', '8', '--out', f'{d}/demo'])
    out = buf.getvalue(); print(out)
    test_eq(rc, 0)
    assert 'train 321,124 / val 16,901' in out and out.count('PASSED') == 2 and '--- matched-gpt:' in out
    test_eq(sorted(p.name for p in Path(d, 'demo').iterdir()), ['loss_curves.png', 'matched-gpt', 'splm-multixi'])
    test_eq(json.loads(Path(d, 'demo', 'splm-multixi', 'summary.json').read_text())['steps'], 3)

# %% [markdown]
# ## The full demo, measured
#
# `make demo` (that is, `semsim demo` with its defaults) was measured on this 2-core machine on 2026-11-22, with other
# developers' jobs running (load average 1.6–1.8 before and after): **162 s wall in all**, of which 148 s (SPLM) and
# 110 s (MatchedGPT) of training, side by side. Its report (progress bars omitted):
#
# ```text
# == validation perplexity (same fixed validation windows) ==
# model              params  steps   val CE   val PPL  best PPL  train s   tok/s
# splm-multixi      815,111   1200   5.3168    203.73    203.73      148   4,499
# matched-gpt       957,440   1200   5.1635    174.78    174.78      110   6,137
# reference (full recipe, 50,257-way BPE, d 128, L 8, 4000 steps of 16 x 128): SPLM em_ln 173.59, MatchedGPT 149.80 ± 7.21
#
# == causal probe of the trained models ==
# splm-multixi   PASSED: Δ_pre 0.0e+00 (Δ_post 3.6e+00), Δ_grad 0.0e+00 (|g_self| 8.9e+04)
# matched-gpt    PASSED: Δ_pre 0.0e+00 (Δ_post 1.7e+00), Δ_grad 0.0e+00 (|g_self| 1.2e+05)
#
# == samples (prompt 'ROMEO:', 60 tokens, temperature 0.8, top-k 40) ==
# --- splm-multixi:
# ROMEO:
#
# I I'll go not not so
# And this be be not
# ...
# --- matched-gpt:
# ROMEO:
# I must go the poor father, so?
# ...
# semsim demo: done in 161 s
# ```
#
# On a heavily loaded machine (load average 4.5, measured earlier the same day) a step took 0.35 s (SPLM) and 0.16 s
# (MatchedGPT), which puts the demo at about 7–8 minutes, still within its 10-minute budget. The perplexities use the
# compact vocabulary and 7.5 % of the reference's tokens (1200 × 8 × 64), so they are not comparable with the
# reference's.
