"""Streaming decode and KV cache: exactness against full recompute through generate(), padding, bad input. Tiny
models, seconds on CPU."""
import pytest
import torch
import torch.nn as nn

from semsim.splm import SPLMConfig, SPLMForCausalLM
from semsim.baselines import KVCache, MatchedGPTConfig, MatchedGPTForCausalLM
from semsim.lm import output_cache
from semsim.streaming import SPLMCache, splm_decode_step, splm_prefill, streaming_forward

VOCAB = 61
torch.set_num_threads(1)


def splm(seed=0, **kw):
    cfg = dict(vocab_size=VOCAB, d=12, max_len=256, L=3, v_hidden=24, v_depth=2, K_mix=3, init_std=0.3, pos_init_std=0.3)
    cfg.update(kw)
    torch.manual_seed(seed)
    m = SPLMForCausalLM(SPLMConfig(**cfg)).eval()
    with torch.no_grad():
        for mod in m.V_theta.modules():
            if isinstance(mod, nn.Linear): mod.weight.normal_(0, 0.3)
    if m.config.mass_mode == 'logfreq': m.set_logfreq_surprisal(torch.rand(VOCAB) * 5)
    return m


CONFIGS = [dict(), dict(xi_fixed=False, ln_after_step=True, mass_mode='logfreq'),
           dict(xi_pool='ema', xi_channels=3, xi_fixed=False, integrator='verlet'),
           dict(xi_pool='hippo_legt', xi_channels=3, xi_theta=10.0, potential='sq3', mass_mode='embed_head'),
           dict(xi_pool='s4d', xi_channels=2, xi_fixed=False, integrator='first_order', ln_after_step=True, potential='sq4')]


@pytest.mark.parametrize('kw', CONFIGS, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'vanilla')
def test_decode_equals_full_forward(kw):
    m = splm(1, **kw)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(2))
    full = m(ids).logits
    lg, cache = splm_prefill(m, ids[:, :5])
    assert ((lg - full[:, :5]).abs().max() / full.abs().max()) < 1e-5
    for t in range(5, 20):
        lg, cache = splm_decode_step(m, cache, ids[:, t])
        assert ((lg[:, 0] - full[:, t]).abs().max() / full[:, t].abs().max()) < 1e-5, t
    assert cache.n_seen == 20 and cache.pos.tolist() == [20, 20]


def test_generate_defaults_to_the_cache():
    assert SPLMConfig().use_cache and MatchedGPTConfig().use_cache
    m = splm(2, max_len=12)
    prompt = torch.randint(0, VOCAB, (1, 4))
    with pytest.raises(ValueError, match='past max_len=12'): m.generate(prompt, max_new_tokens=12, pad_token_id=0)
    assert m.generate(prompt, max_new_tokens=12, pad_token_id=0, use_cache=False).shape == (1, 16)   # recompute crops


def test_generate_200_tokens_identical():
    m = splm(3, **CONFIGS[1])
    prompt = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    kw = dict(max_new_tokens=200, do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    a, b = m.generate(prompt, use_cache=True, **kw), m.generate(prompt, use_cache=False, **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a.logits, b.logits)) < 1e-5
    assert isinstance(output_cache(a), SPLMCache) and output_cache(a).n_seen == 12 + 199


def test_generate_left_padded_batch_equals_rows_alone():
    for m in (splm(5, **CONFIGS[2]), MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=VOCAB, d=12, n_layer=2, n_head=2, max_len=64)).eval()):
        g = torch.Generator().manual_seed(6)
        rows = [torch.randint(0, VOCAB, (n,), generator=g) for n in (4, 9, 6)]
        ids, mask = torch.zeros(3, 9, dtype=torch.long), torch.zeros(3, 9, dtype=torch.long)
        for b, r in enumerate(rows): ids[b, 9 - len(r):], mask[b, 9 - len(r):] = r, 1
        kw = dict(max_new_tokens=15, do_sample=False, pad_token_id=0)
        out = m.generate(ids, attention_mask=mask, use_cache=True, **kw)
        for b, r in enumerate(rows):
            alone = m.generate(r[None], use_cache=False, **kw)
            assert torch.equal(out[b, 9 - len(r):], alone[0]), (type(m).__name__, b)


def test_bad_input_is_named():
    m = splm(0, max_len=10)
    ids = torch.randint(0, VOCAB, (1, 12))
    _, cache = splm_prefill(m, ids[:, :10])
    with pytest.raises(ValueError, match='past max_len=10'): splm_decode_step(m, cache, ids[:, 10])
    with pytest.raises(ValueError, match='not causal'): splm_prefill(splm(0, causal_force=False), ids[:, :4])
    with pytest.raises(ValueError, match='LEFT padding'): splm_prefill(m, ids[:, :3], torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match='all padding'): splm_prefill(m, ids[:, :3], torch.tensor([[0, 0, 0]]))
    with pytest.raises(ValueError, match=r'lie in \[0, 61\)'): splm_prefill(m, ids[:, :3] + 100)
    with pytest.raises(ValueError, match='batch size 2'): splm_decode_step(splm(0), splm_prefill(splm(0), ids[:, :3])[1], torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match='SPLMCache'): streaming_forward(m, ids[:, :1], past_key_values=KVCache(2))
    with pytest.raises(ValueError, match='inputs_embeds'): streaming_forward(m, ids[:, :2], inputs_embeds=torch.zeros(1, 2, 12))
    with pytest.raises(ValueError, match='cannot be padding'):
        streaming_forward(m, ids[:, 3:4], past_key_values=splm_prefill(m, ids[:, :3])[1], attention_mask=torch.tensor([[1, 1, 1, 0]]))
    with pytest.raises(ValueError, match='positive integer'): KVCache(0)


def test_cache_row_operations():
    m = splm(7, **CONFIGS[2])
    ids = torch.randint(0, VOCAB, (3, 8), generator=torch.Generator().manual_seed(8))
    _, c = splm_prefill(m, ids[:, :6])
    c.reorder_cache(torch.tensor([2, 0]))
    lg, c = splm_decode_step(m, c, ids[[2, 0], 6])
    ref = m(ids[[2, 0], :7]).logits[:, -1]
    assert ((lg[:, 0] - ref).abs().max() / ref.abs().max()) < 1e-5
    c.batch_repeat_interleave(2)
    assert c.batch_size == 4 and c.pos.tolist() == [7, 7, 7, 7]
    kv = KVCache(2, capacity=1)
    for t in range(5): k, v = kv.update(torch.full((1, 1, 1, 3), float(t)), torch.zeros(1, 1, 1, 3), 0)
    assert k[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4] and kv.get_seq_length() == 5 and kv.k[0].shape[2] == 8   # doubled 1→2→4→8


def test_state_size_independent_of_context():
    m = splm(9, xi_fixed=False, max_len=256)
    ids = torch.randint(0, VOCAB, (1, 200))
    assert len({splm_prefill(m, ids[:, :T])[1].nbytes for T in (5, 50, 200)}) == 1
    g = MatchedGPTForCausalLM(MatchedGPTConfig(vocab_size=VOCAB, d=12, n_layer=2, n_head=2, max_len=256)).eval()
    assert [output_cache(g(ids[:, :T], use_cache=True)).nbytes for T in (5, 50)] == [2 * 2 * T * 12 * 4 for T in (5, 50)]
