"""What the two-process DDP tests share. The test files run their worker script with `ddp_results`; the worker scripts
(`ddp_train.py`, `kg_ddp_train.py`, `ddp_cocoop.py`, `ddp_deep.py`) shuffle with `install_order()`, build each case with
`case_dls`, fit it with `fit` and train every case in one process and then under DDP with `ddp_cases`."""
import json, os, socket, subprocess, sys
from contextlib import nullcontext
from pathlib import Path
import pytest, torch
from fastcore.basics import noop
from fastai.callback.progress import ProgressCallback
from fastai.data.load import DataLoader
from fastai.torch_core import set_seed
from coop_fast.clip import load_clip
from coop_fast.data import fewshot_dls, fake_images
from coop_fast.distributed import setup_ddp, ddp_order

TIMEOUT = 300  # seconds a two-process run may take

def free_port():
    "A TCP port of 127.0.0.1 that is free now"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def torchrun(script, args, timeout=TIMEOUT, tries=2):
    "Run `script args` in two CPU processes on 127.0.0.1 (again on another port if the port was taken meanwhile)"
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo', 'HF_HUB_OFFLINE': '1'}
    for _ in range(tries):
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(free_port()), str(script), *map(str, args)]
        try: r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"Two-process training did not finish in {timeout} s:\n{(e.stderr or b'')[-4000:]}")
        if r.returncode == 0 or 'address already in use' not in r.stderr.lower(): break
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r

def ddp_results(script, d):
    "Run worker `script` on 4 classes of 8 fake images in two processes; the results both ranks wrote to folder `d`"
    imgs = fake_images(d/'imgs', classes=('cat', 'dog', 'bird', 'fish'), n=8)
    torchrun(script, [imgs, d])
    return [json.loads((d/f'rank{r}.json').read_text()) for r in range(2)]

# -- in the worker scripts -------------------------------------------------------------------------------------------------

class Order:
    "Seeded permutation per shuffle; rearranged by `ddp_order` when one process stands for `world` processes of batch `bs`"
    def __init__(self, world=1, bs=None): self.reset(world, bs)
    def reset(self, world=1, bs=None):
        "Start again from the first permutation"
        self.calls, self.world, self.bs = 0, world, bs
    def __call__(self, dl, idxs):
        g = torch.Generator().manual_seed(self.calls)
        self.calls += 1
        p = [idxs[i] for i in torch.randperm(len(idxs), generator=g).tolist()]
        return ddp_order(p, self.world, self.bs, dl.drop_last) if self.world > 1 else p

def install_order():
    "An `Order` that every fastai `DataLoader` of this process shuffles with: the same item orders in every process"
    order = Order()
    DataLoader.shuffle_fn = lambda self, idxs: order(self, idxs)
    return order

def case_dls(images, arch, bs, **kwargs):
    "Seed 0, the test CLIP `arch` on the CPU, and its few-shot `DataLoaders` of `images` (4 shots, batch `bs`, no flips)"
    set_seed(0)
    clip = load_clip(arch, device='cpu')
    return clip, fewshot_dls(images, clip, shots=4, bs=bs, flip=False, test_pct=0, num_workers=0, device='cpu', **kwargs)

def quiet(learn):
    "No progress bar, no logging"
    learn.remove_cb(ProgressCallback); learn.logger = noop

def fit(learn, ddp, *args, **kwargs):
    "`learn.fit_coop(*args, **kwargs)` on the un-augmented training images, under `learn.ddp_ctx()` when `ddp`"
    with learn.dls.train.dataset.set_split_idx(1), (learn.ddp_ctx() if ddp else nullcontext()): learn.fit_coop(*args, **kwargs)

def summary(learn): return {k: v for k, v in learn.coop_summary.items() if k in ('epochs', 'iterations', 'stopped')}

def frozen(m): return {n: t.detach().clone() for n, t in list(m.clip.named_parameters()) + list(m.clip.named_buffers())}

def ddp_cases(run, cases, bs, more_refs=None):
    """Rank 0 first runs every case in one process (`WORLD_SIZE=1`) with the global batch, `run(name, bs * world, ddp=False)`
    as `ref_<name>` (and the results of `more_refs()`); then every process joins the group and runs `run(name, bs, ddp=True)`"""
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    results = {}
    if rank == 0:  # the one-process reference, before this process joins the group
        os.environ['WORLD_SIZE'] = '1'
        for name in cases: results[f'ref_{name}'] = run(name, bs * world, ddp=False)
        if more_refs is not None: results.update(more_refs())
        os.environ['WORLD_SIZE'] = str(world)
    r, w = setup_ddp(cpu=True)
    assert (r, w) == (rank, world), (r, w)
    for name in cases: results[name] = run(name, bs, ddp=True)
    return results

def write_results(out, results):
    "Write this rank's `results` to `out/rank<r>.json`"
    (Path(out)/f"rank{os.environ['RANK']}.json").write_text(json.dumps(results))
