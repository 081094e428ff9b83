"""CoCoOp under DDP on CPU: two processes (torchrun, gloo, 127.0.0.1) reach the context and Meta-Net of one process with
the same global batch, with and without the image-feature cache, and with the text tower cut into checkpointed chunks."""
from pathlib import Path
import pytest, torch
from ddp_utils import ddp_results

SCRIPT = Path(__file__).parent/'ddp_cocoop.py'
CASES = ('vit', 'vit_cache', 'chunks')
T = torch.tensor

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`)"
    return ddp_results(SCRIPT, tmp_path_factory.mktemp('ddp_cocoop'))

@pytest.mark.parametrize('case', CASES)
def test_same_prompt_as_one_process(ddp, case):
    (r0, r1), ref = ddp, ddp[0][f'ref_{case}']
    assert r0[case]['summary'] == r1[case]['summary'] == ref['summary'] == dict(epochs=2, iterations=4, stopped=None)
    assert sorted(ref['after']) == ['prompt_learner.ctx', 'prompt_learner.meta_net.linear1.bias', 'prompt_learner.meta_net.linear1.weight',
                                    'prompt_learner.meta_net.linear2.bias', 'prompt_learner.meta_net.linear2.weight']
    for n, want in ref['after'].items():
        a, b = T(r0[case]['after'][n]), T(r1[case]['after'][n])
        assert (a - b).abs().max() == 0, n  # DDP keeps the processes identical
        tol = 1e-5 * T(want).abs().max().item()
        assert (a - T(want)).abs().max() <= tol, n
        assert (T(want) - T(ref['before'][n])).abs().max() > 100 * tol, n  # the tensor did move
