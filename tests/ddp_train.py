"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python ddp_train.py IMAGES OUT`.

Before joining the process group, rank 0 also trains every case in one process (the reference, with `WORLD_SIZE=1`),
with the same global batch (8 = 2 x 4) and the same global batches (the order rearranged by `ddp_order`), which saves
importing everything in a third process. Then both ranks train each case under `learn.ddp_ctx()`. Each rank writes
`OUT/rank<r>.json`. Item orders come from a seeded permutation per shuffle, the same in every process.
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
import coop_fast.export as export
from coop_fast.clip import load_clip
from coop_fast.data import fewshot_dls
from coop_fast.learner import coop_learner, FeatureCache
from coop_fast.prompt import CoOpModel
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

encoded = [0]  # images through the image tower in this process
_encode = CoOpModel.encode_image
def encode_image(self, x):
    encoded[0] += len(x)
    return _encode(self, x)
CoOpModel.encode_image = encode_image

text_evals = [0]  # text tower runs with gradients off (validation), in this process
_encode_text = CoOpModel.encode_text
def encode_text(self):
    text_evals[0] += not torch.is_grad_enabled()
    return _encode_text(self)
CoOpModel.encode_text = encode_text

saves = []  # prompt files written in this process
_save = export.save_prompt
def save_prompt(model, path, summary=None, method=None):
    saves.append(str(path))
    return _save(model, path, summary, method)
export.save_prompt = save_prompt

class NaNAt(Callback):
    "Make the training loss of this process NaN at training iteration `it`"
    order = 5
    def __init__(self, it): self.it = it
    def after_loss(self):
        if self.training and self.train_iter == self.it: self.learn.loss = self.loss + float('nan')

class Spy(Callback):
    "Record what the model is wrapped in during training, and which of its tensors DDP synchronises"
    def before_train(self):
        m = self.model
        self.learn.spy = dict(wrapper=type(m).__name__, synced=[n for n, _ in m.module.named_parameters() if n not in m.parameters_to_ignore],
                              buffers=len(m.modules_buffers), sync_buffers=m.will_sync_module_buffers()) if hasattr(m, 'module') else dict(wrapper=type(m).__name__)

CASES = dict(  # name: (arch, feature_cache, epochs)
    vit=('coop-test-vit', False, 3),
    vit_cache=('coop-test-vit', 0, 3),
    rn=('coop-test-rn', False, 3),
    vit_views=('coop-test-vit', 2, 3),
)

def quiet(learn): learn.remove_cb(ProgressCallback); learn.logger = noop

def frozen(m): return {n: t.detach().clone() for n, t in list(m.clip.named_parameters()) + list(m.clip.named_buffers())}

def run(name, bs, ddp, rearrange=True, nan_at=None, perturb=False):
    "Train case `name` with per-process batch `bs`; what to compare"
    arch, cache, epochs = CASES[name]
    order.__init__(*((2, BS) if not ddp and rearrange else (1, None)))
    encoded[0] = text_evals[0] = 0
    set_seed(0)
    clip = load_clip(arch, device='cpu')
    if perturb:
        with torch.no_grad(): clip.visual.conv1.weight.add_(1e-3)
    dls = fewshot_dls(images, clip, shots=4, bs=bs, flip=False, test_pct=0, num_workers=0, device='cpu')
    learn = coop_learner(dls, clip, n_ctx=4, feature_cache=cache, cbs=[Spy()] + ([NaNAt(nan_at)] if nan_at is not None else []))
    quiet(learn)
    m, before = learn.model, frozen(learn.model)
    ctx0 = m.prompt_learner.ctx.detach().clone()
    res = dict(encoded_before=encoded[0])
    try:
        with warnings.catch_warnings(record=True) as ws, dls.train.dataset.set_split_idx(1):  # no augmentation
            warnings.simplefilter('always')
            if ddp:
                with learn.ddp_ctx(): learn.fit_coop(epochs, lr=0.5, warmup_epochs=0)
            else: learn.fit_coop(epochs, lr=0.5, warmup_epochs=0)
    except ValueError as e: return dict(error=str(e), model=type(learn.model).__name__)
    after = frozen(m)
    fc = next((c for c in learn.cbs if isinstance(c, FeatureCache)), None)
    res.update(ctx0=ctx0.tolist(), ctx=m.prompt_learner.ctx.detach().tolist(), encoded=encoded[0], text_evals=text_evals[0], model=type(learn.model).__name__,
               frozen_same=all(torch.equal(before[k], after[k]) for k in before),
               modules=sorted({type(o).__name__ for o in m.clip.modules() if 'Norm' in type(o).__name__}),
               spy=getattr(learn, 'spy', None), ignore_left=hasattr(m, '_ddp_params_and_buffers_to_ignore'),
               summary={k: v for k, v in learn.coop_summary.items() if k in ('epochs', 'iterations', 'stopped')},
               warnings=[str(w.message) for w in ws if issubclass(w.category, RuntimeWarning)])
    if fc is not None and fc.train_cache is not None:
        res['cache'] = fc.train_cache[1][:fc.train_cache[3]].tolist()
        res['valid_cache'] = fc.valid_cache[1].tolist() if fc.valid_cache is not None else None
    return res

results = {}
if RANK == 0:  # the one-process reference, before this process joins the group
    os.environ['WORLD_SIZE'] = '1'
    for name in CASES: results[f'ref_{name}'] = run(name, BS * WORLD, ddp=False)
    results['ref_vit_plain'] = run('vit', BS * WORLD, ddp=False, rearrange=False)
    os.environ['WORLD_SIZE'] = str(WORLD)

rank, world = setup_ddp(cpu=True)
assert (rank, world) == (RANK, WORLD), (rank, world)
for name in CASES: results[name] = run(name, BS, ddp=True)
results['nan'] = run('vit', BS, ddp=True, nan_at=1 if RANK == 1 else None)
results['mismatch'] = run('vit', BS, ddp=True, perturb=RANK == 1)

learn_dir = out/'prompts'
set_seed(0)
clip = load_clip('coop-test-vit', device='cpu')
dls = fewshot_dls(images, clip, shots=4, bs=BS, flip=False, test_pct=0, num_workers=0, device='cpu', path=learn_dir)
learn = coop_learner(dls, clip, n_ctx=4)
quiet(learn)
with learn.ddp_ctx(): learn.fit_coop(1, lr=0.5, warmup_epochs=0)
results['saved'] = dict(path=str(learn.save_prompt('p')), writes=saves, ctx=learn.model.prompt_learner.ctx.detach().tolist())
(out/f'rank{RANK}.json').write_text(json.dumps(results))
