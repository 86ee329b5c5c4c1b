"""The generalised pair test of the chapter *The shared-potential separator* on three models trained on Tiny Shakespeare.

Trains nothing itself: it reads three finished run folders (made by `make results-pair`, which trains them first) —
em_ln (one-body potential), PARF Q9c (one-body potential plus a pair potential over the prefix) and MatchedGPT
(attention) —, runs `pair_separator_fit` on the reference's 40/10 split of the 50-sentence corpus (depth axis, the
one-body fit beside it on the same tokens; every fit seed, the first one in full) and, for the two SPLMs, the oracle
with the model's own force; writes results/pair-shakespeare-cpu.json (numbers only).

Usage: python tools/pair_study.py RUNS_DIR [--out FILE] [--steps 3000] [--batch 16] [--pair-hidden 32] [--seeds 0 1 2] [--workers 2]
"""
import argparse, json, os, platform, statistics, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ('splm-em-ln', 'parf-q9c', 'matched-gpt')
# how `make results-pair` trains them: the separator chapter's recipe (demo preset at L = 8, the full GPT-2 vocabulary)
TRAIN_COMMAND = ("for m in splm-em-ln parf-q9c matched-gpt; do x=; [ $m = splm-em-ln ] && x='--set fixed_gamma=0.1'; "
                 "python -m semsim.train --preset demo --model $m --set L=8 --set compact_vocab=false --max-steps 1000 $x "
                 "--set threads=1 --out runs/pair/$m --no-progress & done; wait")


def task(run_dir, steps, batch, pair_hidden, seed):
    "One model and fit seed in its own process: trajectories, the pair test, and (seed 0) the oracle for an SPLM."
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from semsim.train import load_run
    from semsim.separator import separator_trajectories, pair_separator_fit, oracle_fit, split_ids, _is_splm
    from semsim.runs import run_record
    t0 = time.time()
    model, codec, _ = load_run(run_dir)
    train, test = separator_trajectories(model, None, codec)
    rec = run_record(run_dir); rec.pop('config', None)
    out = {'run': rec, 'pair': pair_separator_fit(train, test, steps=steps, batch=batch, pair_hidden=pair_hidden, seed=seed).to_dict()}
    if _is_splm(model) and seed == 0:
        out['oracle'] = oracle_fit(model, split_ids(codec)).to_dict()
    out['seconds'] = time.time() - t0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', help=f"folder holding the run folders {', '.join(MODELS)}")
    p.add_argument('--out', default=str(ROOT/'results'/'pair-shakespeare-cpu.json'))
    p.add_argument("--steps", type=int, default=3000); p.add_argument('--batch', type=int, default=16)
    p.add_argument('--pair-hidden', type=int, default=32); p.add_argument('--workers', type=int, default=2)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='fit seeds (initialisation and batches); the first is the headline fit')
    a = p.parse_args(argv)
    runs = {m: Path(a.runs)/m for m in MODELS}
    missing = [str(d) for d in runs.values() if not (d/'summary.json').exists()]
    if missing: sys.exit(f"pair_study: unfinished or missing runs: {', '.join(missing)} (make results-pair trains them)")
    t0 = time.time()
    if a.seeds[0] != 0: sys.exit('pair_study: the first seed must be 0 (the headline fit, with the oracle)')
    jobs = [(m, sd) for sd in a.seeds for m in MODELS]
    with ProcessPoolExecutor(a.workers) as ex:
        fits = dict(zip(jobs, ex.map(task, *zip(*[(str(runs[m]), a.steps, a.batch, a.pair_hidden, sd) for m, sd in jobs]))))
    models = {}
    for m in MODELS:
        models[m] = fits[(m, 0)]
        per = [fits[(m, sd)]['pair'] for sd in a.seeds]
        models[m]['seeds'] = {'seeds': a.seeds, 'median_r2': [f['median_r2'] for f in per],
                              'median_r2_shared': [f['median_r2_shared'] for f in per],
                              'median_gain': [statistics.median(f['gain']) for f in per],
                              'layers_gaining': [sum(g > 0 for g in f['gain']) for f in per], 'n_layers': len(per[0]['gain']),
                              'seconds': [fits[(m, sd)]['seconds'] for sd in a.seeds]}
    rec = {'question': 'the generalised pair test (a learned pair potential over the prefix beside the one-body V_psi) '
                       'on semsim models trained on Tiny Shakespeare (CPU budget)',
           'train_command': TRAIN_COMMAND,
           'study_command': f"python tools/pair_study.py {a.runs} --steps {a.steps} --batch {a.batch} --pair-hidden {a.pair_hidden} "
                            f"--seeds {' '.join(map(str, a.seeds))}",
           'budget': 'demo preset at L = 8: d 64, v_hidden 128, v_depth 2, max_len 128, 1000 steps of 8 x 64 tokens, lr 2e-3, '
                     'the full 50,257-way GPT-2 vocabulary; em_ln with γ fixed at 0.10; PARF Q9c at its preset',
           'fit': {'steps': a.steps, 'batch_units': a.batch, 'hidden': 256, 'pair_hidden': a.pair_hidden, 'depth': 2},
           'date': time.strftime('%Y-%m-%d'), 'seconds': time.time() - t0,
           'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'workers': a.workers},
           'models': models}
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(rec, indent=1) + '\n'); os.replace(tmp, out)
    print(f'wrote {out} in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
