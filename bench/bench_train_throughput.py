"""Question 5: training throughput, tokens per second, SPLM (MLP and SQ3 potentials) against MatchedGPT.

Equal width and depth: d = 128, L = 8 (8 integration steps / 8 attention blocks), GPT-2 vocabulary, batch 8 × 256
tokens (the Shakespeare recipe), one training step = forward with loss, backward, gradient clipping at 1.0, AdamW.
SPLM: the em_ln preset (LN after each step, logfreq mass, ξ recomputed from the detached state) with the MLP potential
(force by autograd, second-order graph for training) and with the closed-form SQ3 potential; MatchedGPT: 4 heads,
MLP ×4. Median of interleaved steps. CPU fp32 here; on CUDA (`--device cuda`) the step runs under bf16 autocast —
written, but this machine has no GPU, so that path has not been run. Last line: SPLM-MLP / MatchedGPT tokens/s.
"""
import sys
from contextlib import nullcontext
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import parser, setup, interleaved, save, train_step
from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.baselines import MatchedGPTConfig, MatchedGPTForCausalLM


def main():
    p = parser(__doc__)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    args = p.parse_args()
    hw = setup(args)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('CUDA requested but not available on this machine: nothing measured'); return
    dev = torch.device(args.device)
    B, T, V = (2, 32, 2000) if args.quick else (8, 256, 50257)
    torch.manual_seed(0)
    models = {'splm_mlp': SPLMForCausalLM(SPLMConfig.preset('em_ln', vocab_size=V, max_len=T)),
              'splm_sq3': SPLMForCausalLM(SPLMConfig.preset('em_ln', vocab_size=V, max_len=T, potential='sq3')),
              'matched_gpt': MatchedGPTForCausalLM(MatchedGPTConfig(d=128, n_layer=8, n_head=4, vocab_size=V, max_len=T))}
    opts = {}
    for k, m in models.items():
        m.to(dev).train()
        opts[k] = torch.optim.AdamW(m.parameters(), lr=3e-4)
    ids = torch.randint(0, V, (B, T), device=dev)
    amp = (lambda: torch.autocast('cuda', dtype=torch.bfloat16)) if dev.type == 'cuda' else nullcontext
    def step(k): train_step(models[k], opts[k], ids, amp=amp)
    t = interleaved({k: (lambda k=k: step(k)) for k in models}, repeats=args.repeats, warmup=1)
    rows = {k: dict(step_s=v['median_s'], tokens_per_s=B * T / v['median_s'],
                    params=sum(p.numel() for p in models[k].parameters())) for k, v in t.items()}
    for k, r in rows.items(): print(f"{k:12s}: {r['step_s']:.3f} s/step, {r['tokens_per_s']:8.0f} tokens/s, {r['params']:,} params")
    ratio_mlp = rows['splm_mlp']['tokens_per_s'] / rows['matched_gpt']['tokens_per_s']
    ratio_sq3 = rows['splm_sq3']['tokens_per_s'] / rows['matched_gpt']['tokens_per_s']
    save(f'train_throughput_{args.device}', dict(question='training tokens/s, SPLM vs MatchedGPT', hardware=hw, device=args.device,
                                                 batch=B, block=T, vocab=V, d=128, L=8, rows=rows, times=t,
                                                 ratio_splm_mlp_over_gpt=ratio_mlp, ratio_splm_sq3_over_gpt=ratio_sq3,
                                                 cuda_bf16='not run: no GPU on this machine' if args.device == 'cpu' else 'run'), args)
    print(f"RESULT training tokens/s ({args.device}): SPLM-MLP / MatchedGPT = {ratio_mlp:.2f}, SPLM-SQ3 / MatchedGPT = {ratio_sq3:.2f}")


if __name__ == '__main__': main()
