"""Run by tests/test_deep_ddp.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python ddp_deep.py IMAGES OUT`.

Rank 0 first trains IVLP, MaPLe and PromptSRC in one process (`WORLD_SIZE=1`) with the global batch (8 = 2 x 4) and the
global batches that `DistributedDL` draws (the order rearranged by `ddp_order`); then both ranks train each under
`learn.ddp_ctx()` with batch 4. Each rank writes `OUT/rank<r>.json`: the trained tensors, what DDP synchronised, and
whether the frozen CLIP changed.
"""
import json, os, sys, warnings
from pathlib import Path
import torch
torch.set_num_threads(1)
from fastcore.basics import noop
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.data.load import DataLoader
from fastai.torch_core import set_seed
from coop_fast.clip import load_clip
from coop_fast.data import fewshot_dls
from coop_fast.methods import get_method
from coop_fast.distributed import setup_ddp, ddp_order

images, out = Path(sys.argv[1]), Path(sys.argv[2])
RANK, WORLD, BS = int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), 4
CASES = dict(ivlp=dict(depth_text=2, depth_vision=2), maple=dict(depth=2), promptsrc=dict(depth_text=2, depth_vision=2, gpa_mean=1.5))

class Order:
    "Seeded permutation per shuffle; rearranged by `ddp_order` when one process stands for `world` processes of batch `bs`"
    def __init__(self, world=1, bs=None): self.calls, self.world, self.bs = 0, world, bs
    def __call__(self, dl, idxs):
        g = torch.Generator().manual_seed(self.calls)
        self.calls += 1
        p = [idxs[i] for i in torch.randperm(len(idxs), generator=g).tolist()]
        return ddp_order(p, self.world, self.bs, dl.drop_last) if self.world > 1 else p

order = Order()
DataLoader.shuffle_fn = lambda self, idxs: order(self, idxs)

class Spy(Callback):
    "Record what the model is wrapped in during training, and which of its tensors DDP synchronises"
    def before_train(self):
        m = self.model
        self.learn.spy = (dict(wrapper=type(m).__name__, synced=sorted(n for n, _ in m.module.named_parameters() if n not in m.parameters_to_ignore),
                               sync_buffers=m.will_sync_module_buffers()) if hasattr(m, 'module') else dict(wrapper=type(m).__name__))

def frozen(m): return {n: t.detach().clone() for n, t in list(m.clip.named_parameters()) + list(m.clip.named_buffers())}

def run(name, bs, ddp):
    "Train method `name` with per-process batch `bs`; what to compare"
    order.__init__(*((WORLD, BS) if not ddp else (1, None)))
    set_seed(0)
    clip = load_clip('coop-test-vit', device='cpu')
    dls = fewshot_dls(images, clip, shots=4, bs=bs, flip=False, test_pct=0, num_workers=0, device='cpu')
    learn = get_method(name).learner(dls, clip, cbs=Spy(), **CASES[name])
    learn.remove_cb(ProgressCallback); learn.logger = noop
    m, before = learn.model, frozen(learn.model)
    start = {n: p.detach().clone() for n, p in m.trainable().items()}
    with warnings.catch_warnings(), dls.train.dataset.set_split_idx(1):  # no augmentation
        warnings.simplefilter('ignore')
        if ddp:
            with learn.ddp_ctx(): learn.fit_coop(2, lr=0.05, warmup_epochs=0)
        else: learn.fit_coop(2, lr=0.05, warmup_epochs=0)
    after = frozen(m)
    return dict(tensors={n: p.detach().tolist() for n, p in m.trainable().items()}, start={n: p.tolist() for n, p in start.items()},
                trainable=sorted(m.trainable()), spy=learn.spy, model=type(learn.model).__name__,
                frozen_same=all(torch.equal(before[k], after[k]) for k in before), summary=learn.coop_summary['iterations'])

results = {}
if RANK == 0:  # the one-process reference, before this process joins the group
    os.environ['WORLD_SIZE'] = '1'
    for name in CASES: results[f'ref_{name}'] = run(name, BS * WORLD, ddp=False)
    os.environ['WORLD_SIZE'] = str(WORLD)
rank, world = setup_ddp(cpu=True)
assert (rank, world) == (RANK, WORLD), (rank, world)
for name in CASES: results[name] = run(name, BS, ddp=True)
(out/f'rank{RANK}.json').write_text(json.dumps(results))
