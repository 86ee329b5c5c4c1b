"""The generalised pair test of the chapter *The shared-potential separator* on three models trained on Tiny Shakespeare.

Trains nothing itself: it reads three finished run folders (made by `make results-pair`, which trains them first) —
em_ln (one-body potential), PARF Q9c (one-body potential plus a pair potential over the prefix) and MatchedGPT
(attention) —, runs `pair_separator_fit` on the reference's 40/10 split of the 50-sentence corpus (depth axis, the
one-body fit beside it on the same tokens) and, for the two SPLMs, the oracle with the model's own force; writes
results/pair-shakespeare-cpu.json (numbers only).

Usage: python tools/pair_study.py RUNS_DIR [--out FILE] [--steps 3000] [--batch 16] [--pair-hidden 32] [--workers 2]
"""
import argparse, json, os, platform, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ('splm-em-ln', 'parf-q9c', 'matched-gpt')
# how `make results-pair` trains them: the separator chapter's recipe (demo preset at L = 8, the full GPT-2 vocabulary)
TRAIN_COMMAND = ("for m in splm-em-ln parf-q9c matched-gpt; do x=; [ $m = splm-em-ln ] && x='--set fixed_gamma=0.1'; "
                 "python -m semsim.train --preset demo --model $m --set L=8 --set compact_vocab=false --max-steps 1000 $x "
                 "--set threads=1 --out runs/pair/$m --no-progress & done; wait")


def task(run_dir, steps, batch, pair_hidden):
    "One model in its own process: trajectories, the pair test, and the oracle for an SPLM."
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from semsim.train import load_run
    from semsim.separator import separator_trajectories, pair_separator_fit, oracle_fit, separator_split, _is_splm
    from semsim.trajectories import encode
    from semsim.runs import run_record
    t0 = time.time()
    model, codec, _ = load_run(run_dir)
    train, test = separator_trajectories(model, None, codec)
    rec = run_record(run_dir); rec.pop('config', None)
    out = {'run': rec, 'pair': pair_separator_fit(train, test, steps=steps, batch=batch, pair_hidden=pair_hidden).to_dict()}
    if _is_splm(model):
        ids = [encode(codec, s, 64) for _, s in sum(separator_split(), [])]
        out['oracle'] = oracle_fit(model, ids).to_dict()
    out['seconds'] = time.time() - t0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', help=f"folder holding the run folders {', '.join(MODELS)}")
    p.add_argument('--out', default=str(ROOT/'results'/'pair-shakespeare-cpu.json'))
    p.add_argument("--steps", type=int, default=3000); p.add_argument('--batch', type=int, default=16)
    p.add_argument('--pair-hidden', type=int, default=32); p.add_argument('--workers', type=int, default=2)
    a = p.parse_args(argv)
    runs = {m: Path(a.runs)/m for m in MODELS}
    missing = [str(d) for d in runs.values() if not (d/'summary.json').exists()]
    if missing: sys.exit(f"pair_study: unfinished or missing runs: {', '.join(missing)} (make results-pair trains them)")
    t0 = time.time()
    with ProcessPoolExecutor(a.workers) as ex:
        res = list(ex.map(task, [str(runs[m]) for m in MODELS], [a.steps] * 3, [a.batch] * 3, [a.pair_hidden] * 3))
    rec = {'question': 'the generalised pair test (a learned pair potential over the prefix beside the one-body V_psi) '
                       'on semsim models trained on Tiny Shakespeare (CPU budget)',
           'train_command': TRAIN_COMMAND,
           'study_command': f'python tools/pair_study.py {a.runs} --steps {a.steps} --batch {a.batch} --pair-hidden {a.pair_hidden}',
           'budget': 'demo preset at L = 8: d 64, v_hidden 128, v_depth 2, max_len 128, 1000 steps of 8 x 64 tokens, lr 2e-3, '
                     'the full 50,257-way GPT-2 vocabulary; em_ln with γ fixed at 0.10; PARF Q9c at its preset',
           'fit': {'steps': a.steps, 'batch_units': a.batch, 'hidden': 256, 'pair_hidden': a.pair_hidden, 'depth': 2},
           'date': time.strftime('%Y-%m-%d'), 'seconds': time.time() - t0,
           'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'workers': a.workers},
           'models': dict(zip(MODELS, res))}
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(rec, indent=1) + '\n'); os.replace(tmp, out)
    print(f'wrote {out} in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
