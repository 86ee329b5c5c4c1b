"""Question 1: how much faster is the O(T) context pool than the dense T×T formulation the reference used?

K = 4 channels at B = 8, d = 256, T ∈ {256, 1024, 4096}. The dense side is the reference's formulation: build the
(K,T,T) weight matrices (the EMA in log space with a logsumexp row normalisation) and apply them with one matmul per
channel; the O(T) side is `pool(h)` (chunked scan for EMA/S4D, FFT convolution for HiPPO-LegT). Both in float32,
forward only, median of interleaved repeats. Outputs are compared (max relative error per channel).
Threshold (issue 5): EMA ratio at T = 1024 ≥ 10×. Last line: the EMA ratio at T = 1024.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, interleaved, save, verdict
from semsim.context import make_xi_pool, rel_err


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=5)
    args = p.parse_args()
    hw = setup(args)
    B, d, K = (2, 32, 4) if args.quick else (8, 256, 4)
    Ts = (64, 256) if args.quick else (256, 1024, 4096)
    pools = {'ema': make_xi_pool('ema', K), 'hippo_legt': make_xi_pool('hippo_legt', K), 's4d': make_xi_pool('s4d', K)}
    rows = []
    with torch.no_grad():
        for T in Ts:
            h = torch.randn(B, T, d)
            for name, pool in pools.items():
                reps = max(2, args.repeats // (2 if T >= 4096 else 1))
                t = interleaved({'scan': lambda: pool(h), 'dense': lambda: pool.forward_dense(h)}, repeats=reps)
                err = rel_err(pool(h), pool.forward_dense(h))
                r = dict(pool=name, T=T, B=B, d=d, K=K, scan_ms=1e3 * t['scan']['median_s'], dense_ms=1e3 * t['dense']['median_s'],
                         ratio=t['dense']['median_s'] / t['scan']['median_s'], max_rel_err=err, repeats=reps)
                rows.append(r)
                print(f"{name:10s} T={T:5d}: scan {r['scan_ms']:9.2f} ms  dense {r['dense_ms']:10.2f} ms  ratio {r['ratio']:7.1f}x  max rel err {err:.1e}", flush=True)
    key = [r for r in rows if r['pool'] == 'ema' and r['T'] == (256 if args.quick else 1024)][0]
    save('xi_pools', dict(question='xi pools: O(T) scan vs dense TxT', hardware=hw, rows=rows,
                          headline=dict(pool='ema', T=key['T'], ratio=key['ratio'], threshold=10.0)), args)
    assert all(r['max_rel_err'] < 1e-4 for r in rows), 'scan and dense outputs differ'
    print(f"RESULT xi pool (EMA, K=4) O(T) scan vs dense at T={key['T']}: {key['ratio']:.1f}x {verdict(key['ratio'], 10)}")


if __name__ == '__main__': main()
