"""Question 7: the memory of one training step — what the second-order graph costs — SPLM against MatchedGPT.

One training step's forward (with the loss) and backward, at equal width and depth, GPT-2 vocabulary, batch 2, for
T in {128, 256, 512}, at two shapes:
- Shakespeare, d 128, L 8: SPLM-MLP (em_ln; V_θ an MLP 512 × 3, force by autograd.grad with create_graph), SPLM-SQ3
  (the same model with the SQ3 potential, K_mix 8: closed form) and SQ3 by autograd (`closed_form` off, same
  weights), MatchedGPT (4 heads);
- the SQ3 card's, d 256, K_ξ 4, K_mix 8, L 8: SPLM-MLP (`splm-multixi`, MLP 1024 × 3), SPLM-SQ3 (`splm-sq3`) closed
  form and by autograd, MatchedGPT (4 heads).
Two figures per step, both in bytes, both exact counts of tensor storage (not of the allocator or the process):
- saved: the activations the autograd graph keeps for the backward pass — every tensor packed by
  `torch.autograd.graph.saved_tensors_hooks` during the forward (which includes the graph that create_graph builds
  through the force), counted once per storage, parameters excluded;
  (`saved_vocab_bytes`: the part in tensors with a vocabulary-wide axis — the logits and the loss's log-softmax —,
  which every model pays alike; the rest is what the dynamics, and in the SPLM-MLP the second-order graph, keep);
- peak: the largest total of live tensor storage allocated inside the step (forward and backward: activations,
  temporaries, gradients), tracked op by op with a TorchDispatchMode that weakly references every storage the ops
  create; parameters and the optimizer's state exist before the step and are not in it (their bytes are listed).
The optimizer update is not included (its memory is the parameters' size, the same kind for every model).
Last line: the peak and saved bytes of SPLM-MLP over MatchedGPT at the largest T, and of the SQ3 closed form over
its autograd.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.multiprocessing.reductions import StorageWeakRef
from _common import parser, setup, save
from semsim.models import build_model


class LiveBytes(TorchDispatchMode):
    "Live tensor storage created inside the mode, op by op: `peak` is the largest total seen after any op."
    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        dead = [k for k in self.live if k.expired()]
        for k in dead: self.now -= self.live.pop(k)
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != 'meta':
                s = t.untyped_storage()
                k = StorageWeakRef(s)
                if k not in self.live: self.live[k] = s.nbytes(); self.now += s.nbytes()
        self.peak = max(self.peak, self.now)
        return out


def saved_bytes(fn, params, vocab:int) -> tuple: # (bytes saved for backward, of them in vocabulary-wide tensors, tensors saved, result of fn)
    "Bytes of the distinct non-parameter storages the autograd graph saves while fn runs; those with an axis of size vocab apart."
    own = {p.untyped_storage().data_ptr() for p in params}
    seen, wide = {}, set()
    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            seen.setdefault(s.data_ptr(), s.nbytes())
            if vocab in t.shape: wide.add(s.data_ptr())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): out = fn()
    return sum(seen.values()), sum(seen[k] for k in wide), len(seen), out


def measure(model, ids) -> dict:
    "Saved and peak bytes of one forward + backward of the model on ids (the loss on the same ids)."
    params = list(model.parameters())
    for p in params: p.grad = None
    mode = LiveBytes()
    with mode:
        saved, saved_vocab, n_saved, loss = saved_bytes(lambda: model(ids, labels=ids).loss, params, model.config.vocab_size)
        after_forward = mode.now
        loss.backward()
    for p in params: p.grad = None
    return dict(saved_bytes=saved, saved_vocab_bytes=saved_vocab, saved_tensors=n_saved, live_after_forward_bytes=after_forward, peak_bytes=mode.peak,
                param_bytes=sum(p.numel() * p.element_size() for p in params))


def shapes(quick:bool) -> dict: # shape name -> {model label: (registry name, overrides, closed_form)}
    V = 500 if quick else 50257
    sh = dict(d=32, L=2) if quick else {}
    return {
        'shakespeare_d128_L8': dict(
            splm_mlp=('splm-em-ln', dict(vocab_size=V, **sh), None),
            splm_sq3_closed=('splm-em-ln', dict(vocab_size=V, potential='sq3', K_mix=8, **sh), True),
            splm_sq3_autograd=('splm-em-ln', dict(vocab_size=V, potential='sq3', K_mix=8, **sh), False),
            matched_gpt=('matched-gpt', dict(vocab_size=V, d=sh.get('d', 128), L=sh.get('L', 8), n_head=4), None)),
        'sq3_card_d256_Kxi4_Kmix8_L8': dict(
            splm_mlp=('splm-multixi', dict(vocab_size=V, **(dict(v_hidden=64, **sh) if quick else {})), None),
            splm_sq3_closed=('splm-sq3', dict(vocab_size=V, **sh), True),
            splm_sq3_autograd=('splm-sq3', dict(vocab_size=V, **sh), False),
            matched_gpt=('matched-gpt', dict(vocab_size=V, d=sh.get('d', 256), L=sh.get('L', 8), n_head=4), None))}


def main():
    p = parser(__doc__)
    p.add_argument('--batch', type=int, default=2)
    args = p.parse_args()
    if args.batch < 1: p.error(f'--batch must be ≥ 1, got {args.batch}')
    hw = setup(args)
    Ts = [16, 32] if args.quick else [128, 256, 512]
    rows = []
    for shape, models in shapes(args.quick).items():
        for label, (name, kw, closed) in models.items():
            torch.manual_seed(0)
            model = build_model(name, max_len=Ts[-1], **kw).train()
            if closed is not None:
                assert model.V_theta.closed_form, f'{name} {kw} has no closed-form force'
                model.V_theta.closed_form = closed
            for T in Ts:
                ids = torch.randint(0, model.config.vocab_size, (args.batch, T))
                r = dict(shape=shape, model=label, registry=name, T=T, B=args.batch, **measure(model, ids))
                rows.append(r)
                print(f"{shape:28s} {label:18s} T={T:4d}: peak {r['peak_bytes'] / 2**20:8.1f} MiB, saved {r['saved_bytes'] / 2**20:8.1f} MiB "
                      f"({r['saved_tensors']} tensors, {r['saved_vocab_bytes'] / 2**20:.1f} MiB vocabulary-wide), live after forward {r['live_after_forward_bytes'] / 2**20:8.1f} MiB, "
                      f"params {r['param_bytes'] / 2**20:.1f} MiB", flush=True)
            del model
    get = lambda shape, m, T: next(r for r in rows if r['shape'] == shape and r['model'] == m and r['T'] == T)
    summary = {}
    for shape in shapes(args.quick):
        s = summary[shape] = {}
        for T in Ts:
            mlp, gpt = get(shape, 'splm_mlp', T), get(shape, 'matched_gpt', T)
            c, a = get(shape, 'splm_sq3_closed', T), get(shape, 'splm_sq3_autograd', T)
            s[T] = dict(mlp_over_gpt_peak=mlp['peak_bytes'] / gpt['peak_bytes'], mlp_over_gpt_saved=mlp['saved_bytes'] / gpt['saved_bytes'],
                        sq3_closed_over_autograd_peak=c['peak_bytes'] / a['peak_bytes'],
                        sq3_closed_over_autograd_saved=c['saved_bytes'] / a['saved_bytes'],
                        mlp_over_gpt_saved_beyond_vocab=(mlp['saved_bytes'] - mlp['saved_vocab_bytes']) / (gpt['saved_bytes'] - gpt['saved_vocab_bytes']))
            print(f"{shape:28s} T={T:4d}: SPLM-MLP / MatchedGPT peak {s[T]['mlp_over_gpt_peak']:.2f}, saved {s[T]['mlp_over_gpt_saved']:.2f}; "
                  f"beyond the vocabulary {s[T]['mlp_over_gpt_saved_beyond_vocab']:.2f}; SQ3 closed / autograd peak {s[T]['sq3_closed_over_autograd_peak']:.2f}, saved {s[T]['sq3_closed_over_autograd_saved']:.2f}")
    save('memory', dict(question='memory of one training step (forward + backward): peak and saved-activation bytes',
                        hardware=hw, batch=args.batch, Ts=Ts, vocab=500 if args.quick else 50257, rows=rows, summary=summary,
                        method='exact tensor-storage counts: saved_tensors_hooks (saved, parameters excluded) and a '
                               'TorchDispatchMode tracking live storages (peak); forward + backward, no optimizer update'), args)
    T, sh = Ts[-1], list(summary)
    print('RESULT training-step memory at T = %d: SPLM-MLP / MatchedGPT peak %.2f (d128) %.2f (d256), saved %.2f (d128) %.2f (d256); '
          'SQ3 closed / autograd peak %.2f (d256), saved %.2f (d256)' % (
          T, summary[sh[0]][T]['mlp_over_gpt_peak'], summary[sh[1]][T]['mlp_over_gpt_peak'], summary[sh[0]][T]['mlp_over_gpt_saved'],
          summary[sh[1]][T]['mlp_over_gpt_saved'], summary[sh[1]][T]['sq3_closed_over_autograd_peak'],
          summary[sh[1]][T]['sq3_closed_over_autograd_saved']))


if __name__ == '__main__': main()
