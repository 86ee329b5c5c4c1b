"""Write a results record (small JSON, never checkpoints) from finished run folders, for the Results page.

Usage:
  python tools/results.py shakespeare-cpu runs/shakespeare-cpu/splm-em-ln runs/shakespeare-cpu/matched-gpt
  (`make results-shakespeare-cpu` trains both runs and then calls this.)

The record holds `semsim.runs.run_record` of each folder, the command that made them, the machine, and the
reference's published numbers for the same comparison (semsimula-paper@eb95852).
"""
import argparse, json, os, platform, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STUDIES = {
    'shakespeare-cpu': dict(
        question='Tiny Shakespeare on a 2-core CPU: SPLM em_ln vs MatchedGPT, a stated reduction of the shakespeare preset',
        command=("for m in splm-em-ln matched-gpt; do python -m semsim.train --preset shakespeare --model $m "
                 "--set d=64 --set L=4 --set v_hidden=128 --set v_depth=2 --set compact_vocab=true --max-steps 2000 "
                 "--set warmup=100 --set threads=1 --out runs/shakespeare-cpu/$m --no-progress & done; wait"),
        deviations=['d 64, L 4 (MatchedGPT: 4 blocks, 4 heads), v_hidden 128, v_depth 2 (the preset: d 128, L 8, v_hidden 512, v_depth 3)',
                    'the compact vocabulary of the corpus (not comparable with 50,257-way perplexities)',
                    '2000 steps of 16 x 128 tokens (half the reference budget), warm-up 100'],
        reference={'source': 'semsimula-paper@eb95852: notebooks/conservative_arch/ (Shakespeare, 50,257-way BPE, d 128, L 8, 4000 steps)',
                   'splm-em-ln': {'val_ppl': 173.59, 'seeds': 1, 'gamma_final': 0.958},
                   'matched-gpt': {'val_ppl': 149.80, 'val_ppl_std': 7.21, 'seeds': 5}}),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('study', choices=sorted(STUDIES))
    p.add_argument('runs', nargs='+', help='finished run folders')
    p.add_argument('--out', default=None, help='output JSON (default results/<study>.json)')
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from semsim.runs import run_record
    rec = {**STUDIES[a.study], 'date': time.strftime('%Y-%m-%d'), 'provenance': 'tools/results.py from the run folders',
           'hardware': {'cpu_count': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version()},
           'runs': [run_record(r) for r in a.runs]}
    out = Path(a.out or ROOT/'results'/f'{a.study}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(rec, indent=1) + '\n'); os.replace(tmp, out)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
