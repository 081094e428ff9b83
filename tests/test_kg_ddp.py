"""KgCoOp and ProGrad under DDP on CPU: two processes (torchrun, gloo, 127.0.0.1) reach the context of one process with the
same global batch. ProGrad projects the all-reduced gradients: both processes make the same projection, that of the
global batch; projecting each process's own distillation gradient instead (the `prograd_local` case) makes them drift apart."""
from pathlib import Path
import pytest, torch
from ddp_utils import ddp_results

SCRIPT = Path(__file__).parent/'kg_ddp_train.py'
T = torch.tensor

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`)"
    return ddp_results(SCRIPT, tmp_path_factory.mktemp('kg_ddp'))

def _diff(a, b): return (T(a) - T(b)).abs().max().item()

@pytest.mark.parametrize('case', ('prograd', 'prograd_cache', 'kgcoop'))
def test_same_context_as_one_process(ddp, case):
    r0, r1 = ddp
    a, b, ref = r0[case], r1[case], r0[f'ref_{case}']
    assert a['summary'] == b['summary'] == ref['summary'] == dict(epochs=3, iterations=6, stopped=None)
    assert _diff(a['ctx'], b['ctx']) == 0  # the processes stay identical
    tol = 1e-5 * T(ref['ctx']).abs().max().item()
    assert _diff(a['ctx'], ref['ctx']) <= tol
    assert _diff(ref['ctx'], ref['ctx0']) > 1000 * tol  # the context did move
    assert a['model'] == 'CoOpModel' and a['own_encode_text']  # unwrapped, and KgCoOp gave `encode_text` back

@pytest.mark.parametrize('case', ('prograd', 'prograd_cache'))
def test_projected_alike(ddp, case):
    "The teacher conflicts with the cross-entropy at the same steps (at least the first), in one process and in each of the two"
    r0, r1 = ddp
    assert r0[case]['projected'] == r1[case]['projected'] == r0[f'ref_{case}']['projected'] >= 1

def test_local_projection_differs(ddp):
    "The check has teeth: projecting each process's own distillation gradient leaves the processes with different contexts"
    r0, r1 = ddp
    tol = 1e-5 * T(r0['ref_prograd']['ctx']).abs().max().item()
    assert _diff(r0['prograd_local']['ctx'], r1['prograd_local']['ctx']) > 100 * tol
    assert _diff(r0['prograd_local']['ctx'], r0['ref_prograd']['ctx']) > 100 * tol
