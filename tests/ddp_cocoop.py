"""Run by tests/test_cocoop.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python ddp_cocoop.py IMAGES OUT`.

CoCoOp under `learn.ddp_ctx()`: before joining the process group, rank 0 trains each case in one process with the same
global batch (8 = 2 x 4) and the same global batches (rearranged by `ddp_order`); then both ranks train it under DDP.
The `chunks` case forces the text tower into many checkpointed chunks, so that DDP's gradient hooks meet the recomputation.
Each rank writes `OUT/rank<r>.json` with the trained tensors.
"""
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from fastcore.basics import noop
from fastai.callback.progress import ProgressCallback
from fastai.data.load import DataLoader
from fastai.torch_core import set_seed
from coop_fast.clip import load_clip
from coop_fast.data import fewshot_dls
from coop_fast.cocoop import cocoop_learner
from coop_fast.distributed import setup_ddp, ddp_order

images, out = Path(sys.argv[1]), Path(sys.argv[2])
RANK, WORLD, BS = int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), 4

class Order:
    "Seeded permutation per shuffle; rearranged by `ddp_order` when one process stands for `world` of batch `bs`"
    def __init__(self, world=1, bs=None): self.calls, self.world, self.bs = 0, world, bs
    def __call__(self, dl, idxs):
        g = torch.Generator().manual_seed(self.calls)
        self.calls += 1
        p = [idxs[i] for i in torch.randperm(len(idxs), generator=g).tolist()]
        return ddp_order(p, self.world, self.bs, dl.drop_last) if self.world > 1 else p

order = Order()
DataLoader.shuffle_fn = lambda self, idxs: order(self, idxs)

CASES = dict(vit=('coop-test-vit', False, 1024.), vit_cache=('coop-test-vit', 0, 1024.), chunks=('coop-test-rn', False, 1e-4))

def run(name, bs, ddp):
    "Train case `name` with per-process batch `bs`: the trainable tensors before and after, and what DDP synchronised"
    arch, cache, chunk_mb = CASES[name]
    order.__init__(*((1, None) if ddp else (WORLD, BS)))
    set_seed(0)
    clip = load_clip(arch, device='cpu')
    dls = fewshot_dls(images, clip, shots=4, bs=bs, flip=False, test_pct=0, num_workers=0, device='cpu')
    learn = cocoop_learner(dls, clip, pretrained=None, feature_cache=cache, chunk_mb=chunk_mb)
    learn.remove_cb(ProgressCallback); learn.logger = noop
    m = learn.model
    with torch.no_grad(): m.prompt_learner.meta_net.linear1.bias.fill_(1.)  # hidden units on: else a random CLIP's may all be off
    before = {n: t.detach().clone() for n, t in m.trainable().items()}
    with dls.train.dataset.set_split_idx(1):  # no augmentation
        if ddp:
            with learn.ddp_ctx(): learn.fit_coop(2, lr=0.5, warmup_epochs=0)
        else: learn.fit_coop(2, lr=0.5, warmup_epochs=0)
    return dict(before={n: t.tolist() for n, t in before.items()}, after={n: t.detach().tolist() for n, t in m.trainable().items()},
                summary={k: v for k, v in learn.coop_summary.items() if k in ('epochs', 'iterations', 'stopped')})

results = {}
if RANK == 0:  # the one-process reference, before this process joins the group
    os.environ['WORLD_SIZE'] = '1'
    for name in CASES: results[f'ref_{name}'] = run(name, BS * WORLD, ddp=False)
    os.environ['WORLD_SIZE'] = str(WORLD)
rank, world = setup_ddp(cpu=True)
assert (rank, world) == (RANK, WORLD), (rank, world)
for name in CASES: results[name] = run(name, BS, ddp=True)
(out/f'rank{RANK}.json').write_text(json.dumps(results))
