"""DDP on CPU for the deep-prompt methods: two processes (torchrun, gloo, 127.0.0.1) train IVLP, MaPLe and PromptSRC
(its regulariser and GPA included) to the tensors one process reaches with the same global batches; DDP synchronises
the prompts and couplers only and leaves the frozen CLIP alone."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest, torch
from coop_fast.data import fake_images

SCRIPT, TIMEOUT = Path(__file__).parent/'ddp_deep.py', 300
CASES = ('ivlp', 'maple', 'promptsrc')

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`)"
    d = tmp_path_factory.mktemp('ddp_deep')
    imgs = fake_images(d/'imgs', classes=('cat', 'dog', 'bird', 'fish'), n=8)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo', 'HF_HUB_OFFLINE': '1'}
    for _ in range(2):  # again on another port if the port was taken meanwhile
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(free_port()), str(SCRIPT), str(imgs), str(d)]
        try: r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as e: pytest.fail(f"Two-process training did not finish in {TIMEOUT} s:\n{(e.stderr or b'')[-4000:]}")
        if r.returncode == 0 or 'address already in use' not in r.stderr.lower(): break
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return [json.loads((d/f'rank{k}.json').read_text()) for k in range(2)]

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
