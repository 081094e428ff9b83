"""Run by tests/test_cocoop.py under `torchrun --nproc_per_node 2` on CPU (gloo): `python ddp_cocoop.py IMAGES OUT`.

CoCoOp under `learn.ddp_ctx()`: before joining the process group, rank 0 trains each case in one process with the same
global batch (8 = 2 x 4) and the same global batches (rearranged by `ddp_order`); then both ranks train it under DDP.
The `chunks` case forces the text tower into many checkpointed chunks, so that DDP's gradient hooks meet the recomputation.
Each rank writes `OUT/rank<r>.json` with the trained tensors.
"""
import os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ddp_utils lies next to this script, wherever torchrun starts it from
from coop_fast.cocoop import cocoop_learner
from ddp_utils import install_order, case_dls, quiet, fit, summary, ddp_cases, write_results

images, out = Path(sys.argv[1]), Path(sys.argv[2])
WORLD, BS = int(os.environ['WORLD_SIZE']), 4
order = install_order()

CASES = dict(vit=('coop-test-vit', False, 1024.), vit_cache=('coop-test-vit', 0, 1024.), chunks=('coop-test-rn', False, 1e-4))

def run(name, bs, ddp):
    "Train case `name` with per-process batch `bs`: the trainable tensors before and after, and what DDP synchronised"
    arch, cache, chunk_mb = CASES[name]
    order.reset(*((1, None) if ddp else (WORLD, BS)))
    clip, dls = case_dls(images, arch, bs)
    learn = cocoop_learner(dls, clip, pretrained=None, feature_cache=cache, chunk_mb=chunk_mb)
    quiet(learn)
    m = learn.model
    with torch.no_grad(): m.prompt_learner.meta_net.linear1.bias.fill_(1.)  # hidden units on: else a random CLIP's may all be off
    before = {n: t.detach().clone() for n, t in m.trainable().items()}
    fit(learn, ddp, 2, lr=0.5, warmup_epochs=0)
    return dict(before={n: t.tolist() for n, t in before.items()}, after={n: t.detach().tolist() for n, t in m.trainable().items()},
                summary=summary(learn))

write_results(out, ddp_cases(run, CASES, BS))
