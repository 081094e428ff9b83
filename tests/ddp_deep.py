"""Run by tests/test_deep_ddp.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python ddp_deep.py IMAGES OUT`.

Rank 0 first trains IVLP, MaPLe and PromptSRC in one process (`WORLD_SIZE=1`) with the global batch (8 = 2 x 4) and the
global batches that `DistributedDL` draws (the order rearranged by `ddp_order`); then both ranks train each under
`learn.ddp_ctx()` with batch 4. Each rank writes `OUT/rank<r>.json`: the trained tensors, what DDP synchronised, and
whether the frozen CLIP changed.
"""
import os, sys, warnings
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ddp_utils lies next to this script, wherever torchrun starts it from
from fastai.callback.core import Callback
from coop_fast.methods import get_method
from ddp_utils import install_order, case_dls, quiet, fit, frozen, ddp_cases, write_results

images, out = Path(sys.argv[1]), Path(sys.argv[2])
WORLD, BS = int(os.environ['WORLD_SIZE']), 4
CASES = dict(ivlp=dict(depth_text=2, depth_vision=2), maple=dict(depth=2), promptsrc=dict(depth_text=2, depth_vision=2, gpa_mean=1.5))
order = install_order()

class Spy(Callback):
    "Record what the model is wrapped in during training, and which of its tensors DDP synchronises"
    def before_train(self):
        m = self.model
        self.learn.spy = (dict(wrapper=type(m).__name__, synced=sorted(n for n, _ in m.module.named_parameters() if n not in m.parameters_to_ignore),
                               sync_buffers=m.will_sync_module_buffers()) if hasattr(m, 'module') else dict(wrapper=type(m).__name__))

def run(name, bs, ddp):
    "Train method `name` with per-process batch `bs`; what to compare"
    order.reset(*((WORLD, BS) if not ddp else (1, None)))
    clip, dls = case_dls(images, 'coop-test-vit', bs)
    learn = get_method(name).learner(dls, clip, cbs=Spy(), **CASES[name])
    quiet(learn)
    m, before = learn.model, frozen(learn.model)
    start = {n: p.detach().clone() for n, p in m.trainable().items()}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fit(learn, ddp, 2, lr=0.05, warmup_epochs=0)
    after = frozen(m)
    return dict(tensors={n: p.detach().tolist() for n, p in m.trainable().items()}, start={n: p.tolist() for n, p in start.items()},
                trainable=sorted(m.trainable()), spy=learn.spy, model=type(learn.model).__name__,
                frozen_same=all(torch.equal(before[k], after[k]) for k in before), summary=learn.coop_summary['iterations'])

write_results(out, ddp_cases(run, CASES, BS))
