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
# | `semsim demo` | the main job (`make demo`) | this one |
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

def main(argv:Optional[Sequence[str]]=None) -> int: # arguments; default sys.argv[1:]
    "Entry point of the `semsim` command."
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
# ## `semsim demo`: the main job
#
# `make demo` runs `semsim demo`. It grows with the project; today it loads Tiny Shakespeare, tokenizes it and prints
# the corpus statistics and a decoded sample batch.

# %%
#| export
def _add_demo_args(p):
    p.add_argument('--corpus', default='tinyshakespeare', help='corpus name or path')

@command('demo', 'The main job: load and tokenize Tiny Shakespeare, print statistics and a decoded sample batch.', _add_demo_args)
def run_demo(args) -> int:
    print('== semsim demo: the data layer ==')
    return run_data(argparse.Namespace(corpus=args.corpus, val_frac=0.05, batch_size=2, block_size=48, seed=0, json=False))


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

# %%
#| export
ANALYSES = ('stp',)  # the analyses `semsim analyze` knows

def _add_analyze_args(p):
    p.add_argument('analysis', choices=ANALYSES, help='which analysis to run')
    p.add_argument('--model', required=True, help="Hub name (gpt2, EleutherAI/pythia-160m) or a folder written by save_pretrained")
    p.add_argument('--corpus', default=None, help='JSON {"domains": {name: [sentences]}}, a JSON list or a text file with one sentence per line (default: $SEMSIM_DATA_DIR/stp_corpus_50.json)')
    p.add_argument('--out', required=True, help='output folder for stp_stats.json and the PNG figures')
    p.add_argument('--tokenizer', default='auto', help="'auto' (the model's), 'gpt2', or a Hub name / folder")
    p.add_argument('--layer', type=int, default=-1, help='hidden_states index of the token-axis trajectory (-1: last, post-final-norm)')
    p.add_argument('--states', choices=['h', 'prenorm', 'postnorm'], default='h',
                   help="'h': hidden_states[layer] (the reference's); 'prenorm' / 'postnorm': the input / output of the final norm")
    p.add_argument('--n-perm', type=int, default=100, help='permutation-null shuffles')
    p.add_argument('--n-random', type=int, default=500, help='random triples per sentence for the random-triplet STP')
    p.add_argument('--seed', type=int, default=42, help='seed of the null and the random triplets')
    p.add_argument('--max-length', type=int, default=256, help='truncation, in tokens')
    p.add_argument('--device', default='cpu', help="'cpu', 'cuda', ...")
    p.add_argument('--dtype', default='float32', help='float32, float16 or bfloat16')

@command('analyze', 'Trajectory analyses of a model: `semsim analyze stp --model M --corpus FILE --out DIR`.', _add_analyze_args)
def run_analyze(args) -> int:
    import matplotlib
    if 'matplotlib.pyplot' not in sys.modules: matplotlib.use('Agg')  # files only: no display needed
    import transformers
    transformers.logging.disable_progress_bar()  # keep stderr for errors: one line each
    from semsim.stp import analyze_stp
    st = analyze_stp(args.model, args.corpus, args.out, tokenizer=args.tokenizer, layer=args.layer, which=args.states,
                     n_perm=args.n_perm, seed=args.seed, n_random=args.n_random, max_length=args.max_length,
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

# %%
test_eq(sorted(COMMANDS)[:3], ['analyze', 'data', 'demo'])
with contextlib.redirect_stderr(io.StringIO()):
    try: main(['no-such-command']); raise AssertionError('an unknown subcommand must not run')
    except SystemExit as e: test_eq(e.code, 2)  # argparse's usage error
