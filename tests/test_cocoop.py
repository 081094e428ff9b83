"""CoCoOp under DDP on CPU: two processes (torchrun, gloo, 127.0.0.1) reach the context and Meta-Net of one process with
the same global batch, with and without the image-feature cache, and with the text tower cut into checkpointed chunks."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from coop_fast.data import fake_images
from test_distributed import free_port

SCRIPT, TIMEOUT = Path(__file__).parent/'ddp_cocoop.py', 300
CASES = ('vit', 'vit_cache', 'chunks')
T = torch.tensor

def torchrun(args, tries=2):
    "Run `ddp_cocoop.py args` in two CPU processes on 127.0.0.1 (again on another port if the port was taken meanwhile)"
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo', 'HF_HUB_OFFLINE': '1'}
    for i in range(tries):
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(free_port()), str(SCRIPT), *map(str, args)]
        try: r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as e: pytest.fail(f"Two-process training did not finish in {TIMEOUT} s:\n{(e.stderr or b'')[-4000:]}")
        if r.returncode == 0 or 'address already in use' not in r.stderr.lower(): break
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"

@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    "Results of both ranks (rank 0 also holds the one-process references `ref_*`)"
    d = tmp_path_factory.mktemp('ddp_cocoop')
    imgs = fake_images(d/'imgs', classes=('cat', 'dog', 'bird', 'fish'), n=8)
    torchrun([imgs, d])
    return [json.loads((d/f'rank{r}.json').read_text()) for r in range(2)]

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
