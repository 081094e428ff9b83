"""DDP on CPU for the deep-prompt methods: two processes (torchrun, gloo, 127.0.0.1) train IVLP, MaPLe and PromptSRC
(its regulariser and GPA included) to the tensors one process reaches with the same global batches; DDP synchronises
the prompts and couplers only and leaves the frozen CLIP alone."""
from pathlib import Path
import pytest, torch
from ddp_utils import ddp_results

SCRIPT = Path(__file__).parent/'ddp_deep.py'
CASES = ('ivlp', 'maple', 'promptsrc')

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`)"
    return ddp_results(SCRIPT, tmp_path_factory.mktemp('ddp_deep'))

def _diff(a, b): return (torch.tensor(a) - torch.tensor(b)).abs().max().item()

@pytest.mark.parametrize('case', CASES)
def test_same_tensors_as_one_process(ddp, case):
    (r0, r1), ref = ddp, ddp[0][f'ref_{case}']
    assert r0[case]['summary'] == r1[case]['summary'] == ref['summary'] == 4  # 2 epochs of 2 global batches
    for n, want in ref['tensors'].items():
        assert _diff(r0[case]['tensors'][n], r1[case]['tensors'][n]) == 0, n  # DDP keeps the processes identical
        tol = 1e-5 * torch.tensor(want).abs().max().item()
        assert _diff(r0[case]['tensors'][n], want) <= tol, n
        assert _diff(want, ref["start"][n]) > 10 * tol, n  # the tensor did move, by more than the tolerance

@pytest.mark.parametrize('case', CASES)
def test_ddp_syncs_prompts_only(ddp, case):
    for r in ddp:
        assert r[case]['spy'] == dict(wrapper='DistributedDataParallel', synced=r[case]['trainable'], sync_buffers=False)
        assert r[case]['frozen_same'] and r[case]['model'] == ddp[0][f'ref_{case}']['model']
    assert ddp[0][f'ref_{case}']['spy']['wrapper'] == ddp[0][f'ref_{case}']['model']
