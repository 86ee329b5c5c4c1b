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

# %%
#| export
from __future__ import annotations
import argparse, json, sys
from typing import Callable, Optional, Sequence

# %%
#| hide
from fastcore.test import test_eq, test_fail
import contextlib, io

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
    except (FileNotFoundError, ValueError, ConnectionError, ImportError) as e:
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

# %%
test_eq(sorted(COMMANDS)[:2], ['data', 'demo'])
with contextlib.redirect_stderr(io.StringIO()):
    try: main(['no-such-command']); raise AssertionError('an unknown subcommand must not run')
    except SystemExit as e: test_eq(e.code, 2)  # argparse's usage error
