"""The SPLM family on one table: every member trained on Tiny Shakespeare at one CPU budget, then seeds for the best.

Usage:
  python experiments/family.py                 # train what is missing (two runs at a time), write results/family-shakespeare-cpu.json
  python experiments/family.py --reuse         # also take finished runs of the identical recipe from results/*.json
  python experiments/family.py --collect-only  # write the JSON from what exists, train nothing
  (`make results-family` runs the first form.)

Recipe: `semsim train --preset demo --max-steps 600 --set threads=1` (d 64, L 4, v_hidden 128, compact vocabulary,
8 x 64 tokens per step, the same data order and evaluation windows for every member), seed 0 for every member, then
seeds 1 and 2 for the five best members and for MatchedGPT (other members' seeds 1 and 2 enter the table only where a
finished run of the identical recipe already exists). The causal verdict is `semsim.causal.audit` on the member
built at the recipe's sizes (float64). A run is reused only if its recorded TrainConfig equals the planned one field
by field (run-time fields such as `out` and `threads` aside).
"""
import argparse, glob, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = 'family-shakespeare-cpu'
STEPS, SEEDS, TOP = 600, (0, 1, 2), 5
BASELINE = 'matched-gpt'
MEMBERS = [   # (label, registry name, model-config fields over the recipe)
    ('vanilla', 'splm-vanilla', {}), ('em_ln', 'splm-em-ln', {}),
    ('multi-ξ K-EMA', 'splm-multixi', {}), ('multi-ξ HiPPO', 'splm-multixi-hippo', {}), ('multi-ξ S4D', 'splm-multixi-s4d', {}),
    ('SQ3', 'splm-sq3', {}), ('first-order', 'splm-first-order', {}), ('Verlet', 'splm-verlet', {}), ('em_gm', 'splm-em-gm', {}),
    ('Q9c', 'parf-q9c', {}), ('sparse PARF', 'parf-sparse', {}), ('multi-ξ PARFLM', 'parflm-multixi', {}), ('Fock', 'fock-parflm', {}),
    ('Variant A k4m4', 'hybrid-a', {}), ('Variant A k2m6', 'hybrid-a', {'n_attn': 2, 'n_splm': 6}),
    ('Q9d AAAASSSS', 'helmholtz-q9d', {}), ('Q9d AASSSSSS', 'helmholtz-q9d', {'schedule': 'AASSSSSS'}),
    ('Q9d SASASASA', 'helmholtz-q9d', {'schedule': 'SASASASA'}),
    ('matched-gpt', 'matched-gpt', {}), ('matched-gpt L8', 'matched-gpt', {'L': 8}),
]
REFERENCE = {'source': 'semsimula-paper@eb95852 (Tiny Shakespeare, 50,257-way BPE, d 128, L 8, 4000 steps)',
             'val_ppl': {'matched-gpt': '149.80 ± 7.21 (5 seeds)', 'em_ln': '173.59', 'Variant A k4m4': '147.40 (5 seeds)',
                         'Q9d AAAASSSS': '145.86 (5 seeds)', 'Q9d AASSSSSS': '149.10 (5 seeds)', 'Q9d SASASASA': '189.64 (seed 0)',
                         'Variant A k2m6': '147.28 (seed 0)', 'Q9c': '210.54', 'sparse PARF': '176.65', 'em_gm': '542.65 (energetic-minima run)'}}


def slug(label): return ''.join(ch if ch.isalnum() else '-' for ch in label.lower().replace('ξ', 'xi')).strip('-')


def plan(label, name, fields, seed):
    "The TrainConfig of one run, as the trainer records it, and its command."
    from semsim.train_config import make_config
    from dataclasses import asdict
    out = f'runs/family/{slug(label)}-s{seed}'
    sets = [f'{k}={v}' for k, v in fields.items()] + ['threads=1', f'seed={seed}']
    cfg = make_config('demo', sets, model=name, max_steps=STEPS, out=out, progress=False)
    cmd = [sys.executable, '-m', 'semsim.train', '--preset', 'demo', '--model', name, '--max-steps', str(STEPS),
           *sum((['--set', s] for s in sets), []), '--out', out, '--no-progress']
    return asdict(cfg), cmd, ROOT / out


def same_recipe(a, b):
    from semsim.train_config import RUNTIME_FIELDS
    DEFAULTS = {'xi_grad': 'detach', 'vphi_grad': 'detach'}   # written out by some studies, implied by the others
    margs = lambda m: {k: v for k, v in m.items() if DEFAULTS.get(k) != v}
    strip = lambda c: {k: (margs(v) if k == 'model_args' else v) for k, v in c.items() if k not in RUNTIME_FIELDS}
    return strip(a) == strip(b)


def committed_runs():
    "Every run record in the committed results JSONs (except this study's own), with the file it came from."
    out = []
    for f in sorted(glob.glob(str(ROOT / 'results' / '*.json'))):
        if Path(f).stem == STUDY: continue
        for r in json.loads(Path(f).read_text()).get('runs', []):
            if isinstance(r, dict) and 'config' in r: out.append((Path(f).name, r))
    return out


def obtain(jobs, reuse, collect_only, parallel=2):
    "Records for the planned runs: reused, read from a finished run folder, or trained (`parallel` at a time)."
    from semsim.runs import run_record
    pool = committed_runs() if reuse else []
    recs, todo = {}, []
    for key, (cfg, cmd, folder) in jobs.items():
        hits = [(f, r) for f, r in pool if same_recipe(r['config'], cfg)]
        if hits:   # the first record (by file name); any other run of the same recipe is listed beside it, not hidden
            (f0, r0), rest = hits[0], hits[1:]
            recs[key] = {**r0, 'reused_from': f'results/{f0}',
                         'same_recipe_elsewhere': [{'file': f'results/{f}', 'val_ppl': r['val_ppl']} for f, r in rest]}
        elif (folder / 'summary.json').exists(): recs[key] = run_record(folder)
        elif not collect_only: todo.append((key, cmd, folder))
    running = []
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    while todo or running:
        while todo and len(running) < parallel:
            key, cmd, folder = todo.pop(0)
            print('train', key, ' '.join(cmd[2:]), flush=True)
            running.append((key, folder, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)))
        time.sleep(2)
        for item in list(running):
            key, folder, proc = item
            if proc.poll() is None: continue
            running.remove(item)
            if proc.returncode: raise SystemExit(f'{key}: training failed (rc {proc.returncode}); see {folder}')
            recs[key] = run_record(folder)
    return recs


def verdicts(recs):
    "The leak audit of each member at the recipe's sizes (fresh weights; causality is structural)."
    import torch
    from semsim.models import build_model
    from semsim.causal import audit
    out = {}
    for label, name, fields in MEMBERS:
        r = recs.get((label, 0))
        if r is None: continue
        torch.manual_seed(0)
        class _S: surprisal = torch.linspace(1, 9, r['vocab_size'])
        out[label] = audit(build_model(name, _S(), **{**r['config']['model_args'], 'vocab_size': r['vocab_size']})).verdict
    return out


def summarise(recs, verdict):
    import numpy as np
    from scipy import stats
    rows = []
    for label, name, fields in MEMBERS:
        runs = [recs[(label, s)] for s in SEEDS if (label, s) in recs]
        if not runs: continue
        ppl = [r['val_ppl'] for r in runs]
        row = {'member': label, 'model': name, 'fields': fields, 'params': runs[0]['params'], 'seeds': len(runs),
               'val_ppl': ppl, 'val_ppl_mean': float(np.mean(ppl)), 'val_ppl_sd': float(np.std(ppl, ddof=1)) if len(ppl) > 1 else None,
               'tokens_per_s': float(np.mean([r['tokens'] / r['elapsed_s'] for r in runs])), 'causal_verdict': verdict.get(label),
               'reference': REFERENCE['val_ppl'].get(label)}
        base = [recs.get((BASELINE, s)) for s in SEEDS]
        if label != BASELINE and len(runs) == len(SEEDS) and all(base):
            diff = np.array(ppl) - np.array([b['val_ppl'] for b in base])
            row['vs_matched_gpt'] = {'mean_diff': float(diff.mean()), 'lower_on': int((diff < 0).sum()), 'of': len(diff),
                                     'paired_t_p': float(stats.ttest_rel(ppl, [b['val_ppl'] for b in base]).pvalue)}
        rows.append(row)
    return sorted(rows, key=lambda r: r['val_ppl_mean'])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reuse', action='store_true', help='take identical-recipe runs from the committed results/*.json')
    p.add_argument('--collect-only', action='store_true', help='train nothing; write the JSON from what exists')
    p.add_argument('--parallel', type=int, default=2)
    p.add_argument('--out', default=str(ROOT / 'results' / f'{STUDY}.json'))
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    first = {(l, 0): plan(l, n, f, 0) for l, n, f in MEMBERS}
    recs = obtain(first, a.reuse, a.collect_only, a.parallel)
    ranked = sorted((r['val_ppl'], l) for (l, s), r in recs.items() if s == 0)
    top = [l for _, l in ranked if l != BASELINE][:TOP] + [BASELINE]
    more = {(l, s): plan(l, n, f, s) for l, n, f in MEMBERS if l in top for s in SEEDS[1:]}
    recs.update(obtain(more, a.reuse, a.collect_only, a.parallel))
    extra = {(l, s): plan(l, n, f, s) for l, n, f in MEMBERS if l not in top for s in SEEDS[1:]}
    recs.update(obtain(extra, a.reuse, True))           # the other members' seeds where a run exists: never trained for the table
    rows = summarise(recs, verdicts(recs))
    rec = {'question': 'Every SPLM family member on Tiny Shakespeare at one CPU budget (the demo recipe, 600 steps), seeds 0-2 for the five best and MatchedGPT',
           'command': 'python experiments/family.py --reuse  (make results-family)',
           'deviations': ['the demo recipe: d 64, L 4 (hybrids: their 8-block schedules; MatchedGPT at 4 and at 8 blocks), v_hidden 128, '
                          'v_depth 2, compact vocabulary, 600 steps of 8 x 64 tokens, lr 2e-3 — not the reference 4000 steps at d 128',
                          'members keep their presets over these sizes (multi-ξ and PARFLM: γ 0.30 fixed; hybrids: γ free from 0.15)',
                          'tokens/s: two runs at a time, one thread each, on the 2-core CPU below',
                          'perplexities over the compact vocabulary: comparable with each other, not with the 50,257-way reference'],
           'reference': REFERENCE, 'top': top, 'date': time.strftime('%Y-%m-%d'), 'provenance': 'experiments/family.py',
           'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version()},
           'table': rows, 'runs': [{**r, 'member': l, 'seed': s} for (l, s), r in sorted(recs.items(), key=lambda kv: (kv[0][0], kv[0][1]))]}
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + '\n'); os.replace(tmp, out)
    print(f'wrote {out}')
    for r in rows: print(f"{r['member']:18s} {r['val_ppl_mean']:8.2f} ± {r['val_ppl_sd'] or 0:6.2f} ({r['seeds']})  {r['params']:>9,}  {r['tokens_per_s']:7.0f} tok/s  {r['causal_verdict']}")


if __name__ == '__main__':
    main()
