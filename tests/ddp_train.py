"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python ddp_train.py IMAGES OUT`.

Before joining the process group, rank 0 also trains every case in one process (the reference, with `WORLD_SIZE=1`),
with the same global batch (8 = 2 x 4) and the same global batches (the order rearranged by `ddp_order`), which saves
importing everything in a third process. Then both ranks train each case under `learn.ddp_ctx()`. Each rank writes
`OUT/rank<r>.json`. Item orders come from a seeded permutation per shuffle, the same in every process.
"""
import os, sys, warnings
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ddp_utils lies next to this script, wherever torchrun starts it from
from fastai.callback.core import Callback
import coop_fast.export as export
from coop_fast.learner import coop_learner, FeatureCache
from coop_fast.prompt import CoOpModel
from ddp_utils import install_order, case_dls, quiet, fit, summary, frozen, ddp_cases, write_results

images, out = Path(sys.argv[1]), Path(sys.argv[2])
RANK, WORLD, BS = int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), 4
order = install_order()

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

def run(name, bs, ddp, rearrange=True, nan_at=None, perturb=False):
    "Train case `name` with per-process batch `bs`; what to compare"
    arch, cache, epochs = CASES[name]
    order.reset(*((2, BS) if not ddp and rearrange else (1, None)))
    encoded[0] = text_evals[0] = 0
    clip, dls = case_dls(images, arch, bs)
    if perturb:
        with torch.no_grad(): clip.visual.conv1.weight.add_(1e-3)
    learn = coop_learner(dls, clip, n_ctx=4, feature_cache=cache, cbs=[Spy()] + ([NaNAt(nan_at)] if nan_at is not None else []))
    quiet(learn)
    m, before = learn.model, frozen(learn.model)
    ctx0 = m.prompt_learner.ctx.detach().clone()
    res = dict(encoded_before=encoded[0])
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            fit(learn, ddp, epochs, lr=0.5, warmup_epochs=0)
    except ValueError as e: return dict(error=str(e), model=type(learn.model).__name__)
    after = frozen(m)
    fc = next((c for c in learn.cbs if isinstance(c, FeatureCache)), None)
    res.update(ctx0=ctx0.tolist(), ctx=m.prompt_learner.ctx.detach().tolist(), encoded=encoded[0], text_evals=text_evals[0], model=type(learn.model).__name__,
               frozen_same=all(torch.equal(before[k], after[k]) for k in before),
               modules=sorted({type(o).__name__ for o in m.clip.modules() if 'Norm' in type(o).__name__}),
               spy=getattr(learn, 'spy', None), ignore_left=hasattr(m, '_ddp_params_and_buffers_to_ignore'),
               summary=summary(learn),
               warnings=[str(w.message) for w in ws if issubclass(w.category, RuntimeWarning)])
    if fc is not None and fc.train_cache is not None:
        res['cache'] = fc.train_cache[1][:fc.train_cache[3]].tolist()
        res['valid_cache'] = fc.valid_cache[1].tolist() if fc.valid_cache is not None else None
    return res

results = ddp_cases(run, CASES, BS, more_refs=lambda: dict(ref_vit_plain=run('vit', BS * WORLD, ddp=False, rearrange=False)))
results['nan'] = run('vit', BS, ddp=True, nan_at=1 if RANK == 1 else None)
results['mismatch'] = run('vit', BS, ddp=True, perturb=RANK == 1)

clip, dls = case_dls(images, 'coop-test-vit', BS, path=out/'prompts')
learn = coop_learner(dls, clip, n_ctx=4)
quiet(learn)
with learn.ddp_ctx(): learn.fit_coop(1, lr=0.5, warmup_epochs=0)
results['saved'] = dict(path=str(learn.save_prompt('p')), writes=saves, ctx=learn.model.prompt_learner.ctx.detach().tolist())
write_results(out, results)
