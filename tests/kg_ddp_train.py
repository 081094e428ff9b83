"""Run by tests/test_kg_ddp.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python kg_ddp_train.py IMAGES OUT`.

Rank 0 first trains every case in one process (the reference: `WORLD_SIZE=1`, global batch 8 = 2 x 4, the same global
batches, rearranged by `ddp_order`); then both ranks train each case under `learn.ddp_ctx()`, and write `OUT/rank<r>.json`.
ProGrad's teacher is fixed here (`Sure`): sure that every image is of the class the initial prompt prefers, so that its
gradient conflicts with the cross-entropy's and the projection runs (at the first steps at least).
"""
import sys, warnings
from pathlib import Path
import torch, torch.nn.functional as F
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ddp_utils lies next to this script, wherever torchrun starts it from
import coop_fast.kg as kg
from coop_fast.learner import coop_learner, image_features
from ddp_utils import install_order, case_dls, quiet, fit, summary, ddp_cases, write_results

images, out, BS = Path(sys.argv[1]), Path(sys.argv[2]), 4
order = install_order()

class Sure(kg.ProGrad):
    "ProGrad with fixed teacher text features `w0`"
    def __init__(self, w0, **kwargs): super().__init__(**kwargs); self.fixed = w0
    def targets(self): return self.fixed

CASES = dict(  # name: (callback, feature cache)
    prograd=('prograd', False), prograd_cache=('prograd', 0), kgcoop=('kgcoop', False), prograd_local=('prograd', False))

def run(name, bs, ddp):
    "Train case `name` with per-process batch `bs`; the context before and after, and what the callback counted"
    method, cache = CASES[name]
    order.reset(*((1, None) if ddp else (2, BS)))
    clip, dls = case_dls(images, 'coop-test-vit', bs)
    learn = coop_learner(dls, clip, n_ctx=4, feature_cache=cache)
    if method == 'prograd':  # the teacher: sure of the class the initial prompt prefers on the training images
        with dls.train.dataset.set_split_idx(1): f = image_features(learn.model, dls.train, progress=False)[0]
        with torch.no_grad(): k = learn.model(f).softmax(-1).mean(0).argmax()
        m = F.normalize(F.normalize(f, dim=-1).mean(0), dim=-1)
        cb = Sure(torch.where(torch.arange(learn.model.n_cls)[:, None] == k, m, -m))
    else: cb = kg.KgCoOp()
    learn.add_cb(cb)
    quiet(learn)
    ctx0 = learn.model.prompt_learner.ctx.detach().clone()
    mean = kg.ddp_mean
    if name == 'prograd_local': kg.ddp_mean = lambda ts, group=None: ts  # each process projects its own gradients: wrong
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            fit(learn, ddp, 3, lr=0.5, warmup_epochs=0)
    finally: kg.ddp_mean = mean
    return dict(ctx0=ctx0.tolist(), ctx=learn.model.prompt_learner.ctx.detach().tolist(), projected=int(getattr(cb, 'n_projected', -1)),
                summary=summary(learn),
                model=type(learn.model).__name__, own_encode_text='encode_text' not in vars(learn.model))

write_results(out, ddp_cases(run, CASES, BS))
