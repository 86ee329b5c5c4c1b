"""The retro-fit menu and the Markov-order test on semsim's three Tiny Shakespeare models (the separator chapter's runs).

Reads the run folders made by `make results-separator`, runs `semsim.retrofit.retrofit_menu` and
`semsim.markov_order.analyze_markov_order` on each, and writes results/retrofit-shakespeare-cpu.json and
results/markov-order-shakespeare-cpu.json (numbers only).

Usage: python tools/menu_study.py RUNS_DIR [--workers 2] [--n-boot 10000]
"""
import argparse, json, os, platform, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ('splm-vanilla', 'splm-em-ln', 'matched-gpt')


def task(kind, run_dir, n_boot):
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from semsim.train import load_run
    t0 = time.time()
    model, codec, _ = load_run(run_dir)
    if kind == 'retrofit':
        from semsim.retrofit import retrofit_menu
        r = retrofit_menu(model, None, tokenizer=codec, label=Path(run_dir).name)
    else:
        from semsim.markov_order import analyze_markov_order
        r = analyze_markov_order(model, None, tokenizer=codec, n_boot=n_boot, label=Path(run_dir).name)
    r['seconds'] = time.time() - t0
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs'); p.add_argument('--workers', type=int, default=2); p.add_argument('--n-boot', type=int, default=10_000)
    p.add_argument('--only', choices=['retrofit', 'markov-order'], default=None, help='rerun one study (the other record is kept)')
    a = p.parse_args(argv)
    runs = {m: Path(a.runs)/m for m in MODELS}
    missing = [str(d) for d in runs.values() if not (d/'summary.json').exists()]
    if missing: sys.exit(f"menu_study: unfinished or missing runs: {', '.join(missing)} (make results-separator trains them)")
    kinds = (a.only,) if a.only else ('markov-order', 'retrofit')
    jobs = [(k, m) for m in MODELS for k in kinds]
    t0 = time.time()
    with ProcessPoolExecutor(a.workers) as ex:
        futs = {(k, m): ex.submit(task, k, str(runs[m]), a.n_boot) for k, m in jobs}
        res = {km: f.result() for km, f in futs.items()}
    common = {'models_from': 'the separator chapter\'s runs (make results-separator): the demo preset at L = 8, d 64, 1000 steps, '
                             'full GPT-2 vocabulary; em_ln with γ fixed at 0.10',
              'command': f'python tools/menu_study.py {a.runs} --n-boot {a.n_boot}', 'date': time.strftime('%Y-%m-%d'),
              'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'workers': a.workers}}
    for kind, fname in (('retrofit', 'retrofit-shakespeare-cpu.json'), ('markov-order', 'markov-order-shakespeare-cpu.json')):
        if kind not in kinds: continue
        rec = {**common, 'seconds': time.time() - t0, 'models': {m: res[(kind, m)] for m in MODELS}}
        out = ROOT/'results'/fname; tmp = out.with_suffix('.tmp')
        tmp.write_text(json.dumps(rec, indent=1, default=float) + '\n'); os.replace(tmp, out)
        print(f'wrote {out}')


if __name__ == '__main__':
    main()
