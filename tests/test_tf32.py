"""The trainer's TF32 decision (issue 18): off wherever the force is taken by autograd.grad (TF32 corrupts that
second-order force), on for closed-form potentials and MatchedGPT — on CUDA only. Pure function, checked on CPU."""
import pytest
import torch

from semsim.models import build_model, model_spec
from semsim.train import tf32_allowed

CUDA, CPU = torch.device('cuda'), torch.device('cpu')
TINY = dict(d=16, L=2, vocab_size=50, max_len=16)


@pytest.mark.parametrize('name,allowed', [('splm-em-ln', False), ('splm-multixi', False), ('splm-sq3', True), ('matched-gpt', True)])
def test_tf32_on_cuda_only_without_an_autograd_force(name, allowed):
    model = build_model(name, **TINY, **({'n_head': 2} if name == 'matched-gpt' else {}))
    spec = model_spec(name)
    assert tf32_allowed(spec, model, CUDA) is allowed
    assert tf32_allowed(spec, model, CPU) is False


def test_tf32_follows_the_potential_not_the_name():
    "The SQ3 model with its closed form switched off takes its force by autograd: TF32 must go off with it."
    model = build_model('splm-sq3', **TINY)
    model.V_theta.closed_form = False
    assert tf32_allowed(model_spec('splm-sq3'), model, CUDA) is False


def test_tf32_allowed_exactly_for_the_closed_form_members():
    "Across the whole registry: TF32 on CUDA for MatchedGPT and the closed-form SQ3 and Gaussian-mixture SPLMs only."
    from semsim.models import MODELS
    allowed = []
    for name in MODELS:
        torch.manual_seed(0)
        if tf32_allowed(model_spec(name), build_model(name, **TINY), CUDA): allowed.append(name)
    assert sorted(allowed) == ['matched-gpt', 'splm-em-gm', 'splm-sq3']
