"""Shared helpers of the benchmarks: hardware description, interleaved median timing, JSON results.

Each `bench_*.py` answers one question and prints its ratio on the last line. Results go to bench/results/ (ignored
by git); `--save` also copies them to bench/measured/ (committed: the numbers the Performance page plots).
"""
import argparse, contextlib, json, os, platform, shutil, statistics, subprocess, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS, MEASURED = ROOT / 'bench' / 'results', ROOT / 'bench' / 'measured'


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    "What the numbers were measured on."
    hw = dict(cpu=cpu_model(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
              python=platform.python_version(), platform=platform.platform(), cuda=torch.cuda.is_available(),
              load_avg_1_5_15=[round(x, 2) for x in os.getloadavg()], date=time.strftime('%Y-%m-%d %H:%M:%S'))
    if torch.cuda.is_available(): hw['gpu'] = torch.cuda.get_device_name(0)
    if (os.cpu_count() or 1) <= 2 and not hw['cuda']:
        hw['note'] = 'timings taken on a shared 2-core CPU (other jobs running): ratios of interleaved medians, absolute times noisy'
    return hw


def parser(doc:str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument('--threads', type=int, default=1, help='torch threads (default 1: on a shared 2-core machine a second thread stalls on descheduled peers)')
    p.add_argument('--quick', action='store_true', help='small sizes, for checking the script (numbers not meaningful)')
    p.add_argument('--save', action='store_true', help='also copy the JSON result to bench/measured/ (committed)')
    p.add_argument('--results', type=Path, default=RESULTS, help='folder for the JSON result (default bench/results/)')
    return p


def setup(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hw = hardware()
    print('hardware:', json.dumps(hw))
    if hw['load_avg_1_5_15'][0] > (os.cpu_count() or 1):
        print(f"note: load average {hw['load_avg_1_5_15'][0]} exceeds the {os.cpu_count()} cores: timings are noisy")
    return hw


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def train_step(model, opt, ids, fwd=None, amp=contextlib.nullcontext) -> float:
    "One training step of the trainer's kind: forward with loss (through fwd, e.g. a compiled model), backward, clip 1.0, AdamW."
    opt.zero_grad(set_to_none=True)
    with amp(): loss = (model if fwd is None else fwd)(ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def interleaved(fns:dict, repeats:int=5, warmup:int=1) -> dict:
    "Median seconds of each callable, the calls interleaved round-robin so that machine load hits all alike."
    for _ in range(warmup):
        for f in fns.values(): f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            sync(); t0 = time.perf_counter(); f(); sync()
            times[k].append(time.perf_counter() - t0)
    return {k: dict(median_s=statistics.median(v), min_s=min(v), max_s=max(v), n=len(v)) for k, v in times.items()}


def rounds(fns:dict, repeats:int=11, warmup:int=1,
           before=None) -> dict: # {name: [seconds, one per round]}
    """Time the callables in rounds, each called once per round, the order rotated every round.

    Ratios taken within a round (`ratio_stats`) cancel the machine's slow drift (load, clock) that separate medians
    keep; the rotation cancels any order effect (the cache state one call leaves the next). `before()`, if given, runs
    untimed before every call (e.g. to restore the weights a training step changed)."""
    names = list(fns)
    for _ in range(warmup):
        for f in fns.values():
            if before is not None: before()
            f()
    times = {k: [] for k in names}
    for i in range(repeats):
        for k in names[i % len(names):] + names[:i % len(names)]:
            if before is not None: before()
            sync(); t0 = time.perf_counter(); fns[k](); sync()
            times[k].append(time.perf_counter() - t0)
    return times


def summary(times:dict) -> dict: # {name: dict(median_s, min_s, max_s, n)}
    return {k: dict(median_s=statistics.median(v), min_s=min(v), max_s=max(v), n=len(v)) for k, v in times.items()}


def ratio_stats(num:list, den:list) -> dict:
    """The median of the per-round ratios num/den, its 95 % bootstrap interval (`scipy.stats.bootstrap`, percentile)
    and the exact one-sided sign test that the ratio exceeds 1 (`scipy.stats.binomtest`)."""
    import numpy as np
    from scipy.stats import binomtest, bootstrap
    r = np.asarray(num) / np.asarray(den)
    ci = bootstrap((r,), np.median, confidence_level=0.95, method='percentile', n_resamples=2000, random_state=0).confidence_interval
    wins = int((r > 1).sum())
    return dict(ratio=float(np.median(r)), ratio_ci95=[float(ci.low), float(ci.high)], wins=wins, n=len(r),
                sign_test_p=float(binomtest(wins, len(r), 0.5, alternative='greater').pvalue),
                ratios=[round(float(x), 4) for x in r])


def save(name:str, data:dict, args) -> Path:
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f'{name}.json'
    path.write_text(json.dumps(data, indent=1))
    if args.save and not args.quick:
        MEASURED.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, MEASURED / path.name)
    print(f'results: {path}' + (f' (copied to {MEASURED / path.name})' if args.save and not args.quick else ''))
    return path


def verdict(value:float, threshold:float, higher_is_better:bool=True) -> str:
    ok = value >= threshold if higher_is_better else value <= threshold
    return f"{'PASS' if ok else 'FAIL'} ({'>=' if higher_is_better else '<='} {threshold:g})"

