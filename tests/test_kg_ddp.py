"""KgCoOp and ProGrad under DDP on CPU: two processes (torchrun, gloo, 127.0.0.1) reach the context of one process with the
same global batch. ProGrad projects the all-reduced gradients: both processes make the same projection, that of the
global batch; projecting each process's own distillation gradient instead (the `prograd_local` case) makes them drift apart."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest, torch
from coop_fast.data import fake_images

SCRIPT, TIMEOUT = Path(__file__).parent/'kg_ddp_train.py', 300
T = torch.tensor

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def torchrun(args, tries=2):
    "Run `kg_ddp_train.py args` in two CPU processes on 127.0.0.1 (again on another port if the port was taken meanwhile)"
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo', 'HF_HUB_OFFLINE': '1'}
    for i in range(tries):
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(free_port()), str(SCRIPT), *map(str, args)]
        try: r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"Two-process training did not finish in {TIMEOUT} s:\n{(e.stderr or b'')[-4000:]}")
        if r.returncode == 0 or 'address already in use' not in r.stderr.lower(): break
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`)"
    d = tmp_path_factory.mktemp('kg_ddp')
    imgs = fake_images(d/'imgs', classes=('cat', 'dog', 'bird', 'fish'), n=8)
    torchrun([imgs, d])
    return [json.loads((d/f'rank{r}.json').read_text()) for r in range(2)]

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
