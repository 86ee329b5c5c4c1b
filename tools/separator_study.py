"""The separator study of the chapter *The shared-potential separator*: semsim's three Tiny Shakespeare models.

Trains nothing itself: it reads three finished run folders (made by `make results-separator`, which trains them
first), runs the depth- and token-axis separators, the Jacobian-symmetry test and (for the SPLMs) the oracle on
each, the capacity sweep on MatchedGPT, and writes results/separator-shakespeare-cpu.json (numbers only).

Usage: python tools/separator_study.py RUNS_DIR [--out FILE] [--steps 4000] [--capacity-steps 3000] [--workers 2]
"""
import argparse, json, os, platform, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ('splm-vanilla', 'splm-em-ln', 'matched-gpt')
# how `make results-separator` trains them (the demo preset at L = 8 and the full GPT-2 vocabulary)
TRAIN_COMMAND = ("for m in splm-vanilla splm-em-ln matched-gpt; do x=; [ $m = splm-em-ln ] && x='--set fixed_gamma=0.1'; "
                 "python -m semsim.train --preset demo --model $m --set L=8 --set compact_vocab=false --max-steps 1000 $x "
                 "--out runs/separator/$m --no-progress & done; wait")


def _load(run_dir):
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from semsim.train import load_run
    from semsim.separator import separator_trajectories
    model, codec, _ = load_run(run_dir)
    return model, codec, separator_trajectories(model, None, codec)


def task(kind, run_dir, steps, capacity_steps):
    "One unit of work in its own process: ('fit', dir) -> fits, Jacobian, oracle; ('capacity', dir) -> the sweep."
    from semsim.separator import separator_fit, jacobian_symmetry, oracle_fit, capacity_sweep, split_ids, _is_splm
    from semsim.runs import run_record
    t0 = time.time()
    model, codec, (train, test) = _load(run_dir)
    if kind == 'capacity':
        return {'capacity': capacity_sweep(train, test, steps=capacity_steps), 'seconds': time.time() - t0}
    rec = run_record(run_dir); rec.pop('config', None)
    out = {'run': rec, 'depth': separator_fit(train, test, steps=steps).to_dict(),
           'token': separator_fit(train, test, steps=steps, axis='token').to_dict(),
           'jacobian': jacobian_symmetry(train, test, k=16).to_dict()}
    if _is_splm(model):
        out['oracle'] = oracle_fit(model, split_ids(codec)).to_dict()
    out['seconds'] = time.time() - t0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', help='folder holding the three run folders (splm-vanilla, splm-em-ln, matched-gpt)')
    p.add_argument('--out', default=str(ROOT/'results'/'separator-shakespeare-cpu.json'))
    p.add_argument('--steps', type=int, default=4000); p.add_argument('--capacity-steps', type=int, default=3000)
    p.add_argument('--workers', type=int, default=2)
    a = p.parse_args(argv)
    runs = {m: Path(a.runs)/m for m in MODELS}
    missing = [str(d) for d in runs.values() if not (d/'summary.json').exists()]
    if missing: sys.exit(f"separator_study: unfinished or missing runs: {', '.join(missing)} (make results-separator trains them)")
    jobs = [('capacity', runs['matched-gpt'])] + [('fit', runs[m]) for m in MODELS]
    t0 = time.time()
    with ProcessPoolExecutor(a.workers) as ex:
        futs = [ex.submit(task, k, str(d), a.steps, a.capacity_steps) for k, d in jobs]
        res = [f.result() for f in futs]
    rec = {'question': 'the shared-potential separator on semsim models trained on Tiny Shakespeare (CPU budget)',
           'train_command': TRAIN_COMMAND, 'study_command': f'python tools/separator_study.py {a.runs} --steps {a.steps} --capacity-steps {a.capacity_steps}',
           'budget': 'demo preset at L = 8: d 64, v_hidden 128, v_depth 2, max_len 128, 1000 steps of 8 x 64 tokens, lr 2e-3, '
                     'the full 50,257-way GPT-2 vocabulary; em_ln with γ fixed at 0.10 (the reference leak-free run)',
           'separator': {'steps': a.steps, 'hidden': 256, 'depth': 2, 'capacity_steps': a.capacity_steps},
           'date': time.strftime('%Y-%m-%d'), 'seconds': time.time() - t0,
           'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'workers': a.workers},
           'models': {m: r for m, r in zip(MODELS, res[1:])}, 'capacity_matched_gpt': res[0]}
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(rec, indent=1) + '\n'); os.replace(tmp, out)
    print(f'wrote {out} in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
