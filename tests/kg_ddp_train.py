"""Run by tests/test_kg_ddp.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python kg_ddp_train.py IMAGES OUT`.

Rank 0 first trains every case in one process (the reference: `WORLD_SIZE=1`, global batch 8 = 2 x 4, the same global
batches, rearranged by `ddp_order`); then both ranks train each case under `learn.ddp_ctx()`, and write `OUT/rank<r>.json`.
ProGrad's teacher is fixed here (`Sure`): sure that every image is of the class the initial prompt prefers, so that its
gradient conflicts with the cross-entropy's and the projection runs (at the first steps at least).
"""
import json, os, sys, warnings
from pathlib import Path
import torch, torch.nn.functional as F
torch.set_num_threads(1)
from fastcore.basics import noop
from fastai.callback.progress import ProgressCallback
from fastai.data.load import DataLoader
from fastai.torch_core import set_seed
import coop_fast.kg as kg
from coop_fast.clip import load_clip
from coop_fast.data import fewshot_dls
from coop_fast.learner import coop_learner, image_features
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

class Sure(kg.ProGrad):
    "ProGrad with fixed teacher text features `w0`"
    def __init__(self, w0, **kwargs): super().__init__(**kwargs); self.fixed = w0
    def targets(self): return self.fixed

CASES = dict(  # name: (callback, feature cache)
    prograd=('prograd', False), prograd_cache=('prograd', 0), kgcoop=('kgcoop', False), prograd_local=('prograd', False))

def run(name, bs, ddp):
    "Train case `name` with per-process batch `bs`; the context before and after, and what the callback counted"
    method, cache = CASES[name]
    order.__init__(*((1, None) if ddp else (2, BS)))
    set_seed(0)
    clip = load_clip('coop-test-vit', device='cpu')
    dls = fewshot_dls(images, clip, shots=4, bs=bs, flip=False, test_pct=0, num_workers=0, device='cpu')
    learn = coop_learner(dls, clip, n_ctx=4, feature_cache=cache)
    if method == 'prograd':  # the teacher: sure of the class the initial prompt prefers on the training images
        with dls.train.dataset.set_split_idx(1): f = image_features(learn.model, dls.train, progress=False)[0]
        with torch.no_grad(): k = learn.model(f).softmax(-1).mean(0).argmax()
        m = F.normalize(F.normalize(f, dim=-1).mean(0), dim=-1)
        cb = Sure(torch.where(torch.arange(learn.model.n_cls)[:, None] == k, m, -m))
    else: cb = kg.KgCoOp()
    learn.add_cb(cb)
    learn.remove_cb(ProgressCallback); learn.logger = noop
    ctx0 = learn.model.prompt_learner.ctx.detach().clone()
    mean = kg.ddp_mean
    if name == 'prograd_local': kg.ddp_mean = lambda ts, group=None: ts  # each process projects its own gradients: wrong
    try:
        with warnings.catch_warnings(), dls.train.dataset.set_split_idx(1):  # no augmentation
            warnings.simplefilter('ignore')
            if ddp:
                with learn.ddp_ctx(): learn.fit_coop(3, lr=0.5, warmup_epochs=0)
            else: learn.fit_coop(3, lr=0.5, warmup_epochs=0)
    finally: kg.ddp_mean = mean
    return dict(ctx0=ctx0.tolist(), ctx=learn.model.prompt_learner.ctx.detach().tolist(), projected=int(getattr(cb, 'n_projected', -1)),
                summary={k: v for k, v in learn.coop_summary.items() if k in ('epochs', 'iterations', 'stopped')},
                model=type(learn.model).__name__, own_encode_text='encode_text' not in vars(learn.model))

results = {}
if RANK == 0:  # the one-process reference, before this process joins the group
    os.environ['WORLD_SIZE'] = '1'
    for name in CASES: results[f'ref_{name}'] = run(name, BS * WORLD, ddp=False)
    os.environ['WORLD_SIZE'] = str(WORLD)

rank, world = setup_ddp(cpu=True)
assert (rank, world) == (RANK, WORLD), (rank, world)
for name in CASES: results[name] = run(name, BS, ddp=True)
(out/f'rank{RANK}.json').write_text(json.dumps(results))
