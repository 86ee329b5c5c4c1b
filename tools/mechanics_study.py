"""Energy drift, attractors and the SQ3 basin readout on semsim's Tiny Shakespeare SPLMs.

Reads run folders (the separator chapter's em_ln and vanilla SPLMs from `make results-separator`; the SQ3 multi-ξ and
Verlet SPLMs from `make results-mechanics`, which trains them first) and writes results/mechanics-shakespeare-cpu.json.

Usage: python tools/mechanics_study.py [--workers 2]
"""
import argparse, json, os, platform, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {'splm-vanilla': 'runs/separator/splm-vanilla', 'splm-em-ln': 'runs/separator/splm-em-ln',
        'splm-sq3': 'runs/mechanics/splm-sq3', 'splm-verlet': 'runs/mechanics/splm-verlet'}
TRAIN_COMMAND = ("for m in splm-sq3 splm-verlet; do python -m semsim.train --preset demo --model $m --set L=8 "
                 "--set compact_vocab=false --max-steps 1000 --out runs/mechanics/$m --no-progress & done; wait")
ATTRACTOR_MODELS = ('splm-em-ln', 'splm-sq3')


def task(kind, name):
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from semsim.train import load_run
    from semsim.runs import run_record
    t0 = time.time()
    model, codec, _ = load_run(ROOT/RUNS[name])
    if kind == 'energy':
        from semsim.mechanics import analyze_energy
        r = analyze_energy(model, None, tokenizer=codec, label=name)
        rec = run_record(ROOT/RUNS[name]); rec.pop('config', None); r['run'] = rec
    else:
        from semsim.attractors import analyze_attractors
        r = analyze_attractors(model, None, tokenizer=codec, label=name)
        for mode in r['modes'].values():
            for p in mode.values(): p['basins'] = [{**b, 'tokens': b['tokens'][:15]} for b in p['basins']]
    r['seconds'] = time.time() - t0
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0]); p.add_argument('--workers', type=int, default=2)
    a = p.parse_args(argv)
    missing = [d for d in RUNS.values() if not (ROOT/d/'summary.json').exists()]
    if missing: sys.exit(f"mechanics_study: unfinished or missing runs: {', '.join(missing)}")
    jobs = [('attractors', m) for m in ATTRACTOR_MODELS] + [('energy', m) for m in RUNS]
    t0 = time.time()
    with ProcessPoolExecutor(a.workers) as ex:
        futs = {j: ex.submit(task, *j) for j in jobs}
        res = {j: f.result() for j, f in futs.items()}
    rec = {'train_command': TRAIN_COMMAND, 'study_command': 'python tools/mechanics_study.py', 'date': time.strftime('%Y-%m-%d'),
           'budget': 'the demo preset at L = 8 (d 64), 1000 steps of 8 x 64 tokens, the full GPT-2 vocabulary',
           'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform()}, 'seconds': time.time() - t0,
           'energy': {m: res[('energy', m)] for m in RUNS}, 'attractors': {m: res[('attractors', m)] for m in ATTRACTOR_MODELS}}
    out = ROOT/'results'/'mechanics-shakespeare-cpu.json'; tmp = out.with_suffix('.tmp')
    tmp.write_text(json.dumps(rec, indent=1, default=str) + '\n'); os.replace(tmp, out)
    print(f'wrote {out} in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
