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
    'parf-shakespeare-cpu': dict(
        question='The PARF family beside em_ln and MatchedGPT on Tiny Shakespeare, demo recipe (600 steps), seed 0',
        command=("for m in parf-q9c parf-sparse parflm-multixi splm-em-ln matched-gpt; do python -m semsim.train --preset demo "
                 "--model $m --max-steps 600 --set threads=1 --out runs/parf/$m --no-progress; done  (two at a time)"),
        deviations=["the PARF presets with the reference's δ-form velocity (velocity='positions', δ = h − h_prev after the LN)",
                    'the demo recipe (d 64, L 4, v_hidden 128, compact vocabulary, 600 steps of 8 x 64 tokens), not the reference 4000 steps at d 128',
                    'parflm-multixi at demo sizes (its preset is the TinyStories scale-up)'],
        reference={'source': 'semsimula-paper@eb95852: notebooks/conservative_arch/parf/ (Shakespeare, 4000 steps, d 128)',
                   'val_ppl': {'parf-q9c': 210.54, 'parf-sparse': 176.65, 'splm-em-ln': 173.59, 'matched-gpt': 149.80}}),
    'parf-shakespeare-cpu-buffer': dict(
        question="The PARF family with the em_ln velocity buffer (velocity='buffer'), demo recipe (600 steps), seed 0: the form semsim's PARF had before its presets took the reference's δ-form",
        command=("for m in parf-q9c parf-sparse parflm-multixi fock-parflm; do python -m semsim.train --preset demo --model $m "
                 "--max-steps 600 --set velocity=buffer --set threads=1 --out runs/parf-buffer/$m --no-progress; done  (two at a time)"),
        deviations=['the demo recipe (d 64, L 4, v_hidden 128, compact vocabulary, 600 steps of 8 x 64 tokens), not the reference 4000 steps at d 128',
                    'parflm-multixi at demo sizes (its preset is the TinyStories scale-up)',
                    "velocity='buffer': the velocity is the unnormalised buffer of em_ln, not the reference's δ = h − h_prev after the LN"],
        reference={'source': 'semsimula-paper@eb95852: notebooks/conservative_arch/parf/ (Shakespeare, 4000 steps, d 128)',
                   'val_ppl': {'parf-q9c': 210.54, 'parf-sparse': 176.65}}),
    'fock-shakespeare-cpu': dict(
        question='Fock-PARFLM (prefix-causal registers) on Tiny Shakespeare, demo recipe (600 steps), seed 0, beside parf-shakespeare-cpu',
        command=("python -m semsim.train --preset demo --model fock-parflm --max-steps 600 --set threads=1 "
                 "--out runs/parf/fock-parflm --no-progress"),
        deviations=['the demo recipe (d 64, L 4, v_hidden 128, compact vocabulary, 600 steps of 8 x 64 tokens), as parf-shakespeare-cpu',
                    'no reference anchor: the reference\'s Fock numbers (9.30 / 8.95 TinyStories, 7.69 OWT) came from the leaking model'],
        reference={'source': 'semsimula-paper@119c67d: parf/model_fock_parf_v2.py (leaky reverse channel; honest 258 on OWT d384)'}),
    'live-vs-detach': dict(
        question="xi_grad='live' vs 'detach' on the multi-ξ SPLM (demo recipe, 600 steps), three seeds each",
        command=("for s in 0 1 2; do for mode in detach live; do python -m semsim.train --preset demo --max-steps 600 "
                 "--set xi_grad=$mode --set seed=$s --out runs/live/$mode-s$s --no-progress & done; wait; done"),
        deviations=['the demo recipe (d 64, L 4, compact vocabulary, 600 steps of 8 x 64 tokens), not the reference 3k-step arm'],
        reference={'source': 'the reference\'s gradient-starvation finding: a conservative arm 158.09 (detach) -> 127.73 (live) PPL at 3k steps'}),
    'live-vs-detach-em-ln': dict(
        question="xi_grad='live' vs 'detach' on em_ln (single-ξ SPLM, demo recipe, 600 steps), three seeds each",
        command=("for s in 0 1 2; do for mode in detach live; do python -m semsim.train --preset demo --model splm-em-ln "
                 "--max-steps 600 --set xi_grad=$mode --set seed=$s --set threads=1 --out runs/lvd/splm-em-ln-$mode-s$s "
                 "--no-progress & done; wait; done"),
        deviations=['the demo recipe (d 64, L 4, compact vocabulary, 600 steps of 8 x 64 tokens), not the reference 3k-step arm'],
        reference={'source': 'the reference\'s gradient-starvation finding: a conservative arm 158.09 (detach) -> 127.73 (live) PPL at 3k steps'}),
    'live-vs-detach-q9c': dict(
        question="xi_grad and vphi_grad 'live' vs 'detach' on PARF Q9c (demo recipe, 600 steps), three seeds each",
        command=("for s in 0 1 2; do for mode in detach live; do python -m semsim.train --preset demo --model parf-q9c "
                 "--max-steps 600 --set xi_grad=$mode --set vphi_grad=$mode --set velocity=buffer --set seed=$s --set threads=1 "
                 "--out runs/lvd/parf-q9c-$mode-s$s --no-progress & done; wait; done"),
        deviations=["velocity='buffer' (the em_ln velocity buffer): the runs predate the PARF presets' reference δ-form (velocity='positions'); the flag reproduces them",
                    'the demo recipe (d 64, L 4, v_hidden 128, compact vocabulary, 600 steps of 8 x 64 tokens), not the reference 3k-step arm',
                    "'live' sets both paths live: ξ and the pair source"],
        reference={'source': 'the reference\'s gradient-starvation finding: a conservative arm 158.09 (detach) -> 127.73 (live) PPL at 3k steps'}),
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
