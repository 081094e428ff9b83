"""Reference CoOp vs coop_fast, side by side in one process: train step, evaluation, epoch, memory, exactness.

Run: `python benchmarks/bench_coop.py` (all of it, 80 minutes on 2 CPU cores; `table.py` makes the tables), or e.g.
`python benchmarks/bench_coop.py --archs ViT-B-32 --classes 10 100 --skip-memory` for a quick look.
Random-weight CLIPs, batch 32 at the model's resolution (224 px); on the CPU in fp32 unless `--device cuda --amp fp16`
(what `gpu_check.sh` runs; memory is then not measured: it is the CPU process's resident size). The straightforward path is
`coop_fast.reference.RefCoOp` (the paper's formulation: 77-token prompts through the whole text
tower every step, image tower every step, text features every evaluation batch); the fast path is
`coop_fast.prompt.CoOpModel` (causal truncation + shared prefix, cached evaluation text features,
image tower without autograd). Ratios are reference time / fast time, measured alternately.
"""
import argparse, json, os, statistics, sys, tempfile, time
from contextlib import nullcontext
from pathlib import Path
import torch, torch.nn.functional as F
from coop_fast.clip import load_clip, clip_pre
from coop_fast.prompt import CoOpModel, copy_ctx
from coop_fast.reference import RefCoOp
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import MEM_LIMIT_GB, report_peak, child_memory

DEV, AMP, WORKERS = 'cpu', None, 0  # device, autocast dtype ('fp16'/'bf16') and loader workers: set by --device/--amp/--workers

def amp():
    "Autocast to `AMP` on `DEV`, or nothing"
    return torch.autocast(torch.device(DEV).type, dtype={'fp16': torch.float16, 'bf16': torch.bfloat16}[AMP]) if AMP else nullcontext()

def sync():
    if torch.device(DEV).type == 'cuda': torch.cuda.synchronize()

def classnames(n): return [f'class {i} {w}' for i, w in zip(range(n), ['dog', 'sea lion', 'golden retriever', 'airliner', 'tabby cat'] * n)]

def models(arch, n_cls, **kw):
    "Reference and fast CoOp over one random-weight CLIP, sharing the same context"
    clip = load_clip(arch, device=DEV)
    ref, fast = RefCoOp(clip, classnames(n_cls), **kw), CoOpModel(clip, classnames(n_cls), **kw)
    copy_ctx(ref.prompt_learner, fast.prompt_learner)
    return clip, ref, fast

def batch(clip, bs=32, n_cls=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = clip_pre(clip).size
    return torch.randn(bs, 3, s, s, generator=g).to(DEV), torch.randint(0, n_cls, (bs,), generator=g).to(DEV)

def step_fn(model, ctx, x, y):
    "One SGD step of CoOp's recipe on `ctx`"
    opt = torch.optim.SGD([ctx], lr=2e-3, momentum=0.9, weight_decay=5e-4)
    def step():
        with amp(): loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return step

def timed(f, n=1):
    sync(); t = time.perf_counter()
    for _ in range(n): f()
    sync(); return (time.perf_counter() - t) / n

def alternate(fa, fb, reps, warmup=True):
    "Median times of `fa` and `fb`, run alternately `reps` times after one warm-up each"
    if warmup: fa(); fb()
    ta, tb = [], []
    for _ in range(reps): ta.append(timed(fa)); tb.append(timed(fb))
    return statistics.median(ta), statistics.median(tb)

def bench_train(arch, n_cls, reps):
    clip, ref, fast = models(arch, n_cls)
    x, y = batch(clip, n_cls=n_cls)
    with torch.no_grad(), amp(): diff = (ref(x).float() - fast(x).float()).abs().max().item()
    fast.train()
    tr, tf = alternate(step_fn(ref, ref.prompt_learner.ctx, x, y), step_fn(fast, fast.prompt_learner.ctx, x, y), reps)
    feats = fast.encode_image(x)  # what a warm feature cache hands the model
    ti, tc = alternate(lambda: fast.encode_image(x), step_fn(fast, fast.prompt_learner.ctx, feats, y), reps)
    return dict(ref_step=tr, fast_step=tf, step_ratio=tr / tf, image_fwd=ti, step_ratio_bound=tr / ti,
                fast_cached_step=tc, cached_step_ratio=tr / tc, max_logit_diff=diff)

def bench_fast_train(arch, n_cls, reps):
    "Train step of the fast path alone, from images and from cached features (for when the reference does not fit)"
    clip, _, fast = models(arch, n_cls)
    x, y = batch(clip, n_cls=n_cls)
    fast.train()
    tf, tc = alternate(step_fn(fast, fast.prompt_learner.ctx, x, y), step_fn(fast, fast.prompt_learner.ctx, fast.encode_image(x), y), reps)
    return dict(fast_step=tf, fast_cached_step=tc)

def bench_eval(arch, n_cls, n_batches=5):
    "Time to evaluate `n_batches` batches: reference re-encodes the prompts every batch, fast once per pass"
    clip, ref, fast = models(arch, n_cls)
    xs = [batch(clip, n_cls=n_cls, seed=i)[0] for i in range(n_batches)]
    fast.eval()
    def run(m):
        def f():
            if m is fast: fast._cache = None  # a new evaluation pass
            with torch.no_grad(), amp():
                for x in xs: m(x)
        return f
    tr, tf = alternate(run(ref), run(fast), 1, warmup=n_cls < 1000)
    return dict(ref_eval=tr, fast_eval=tf, eval_ratio=tr / tf)

class TrainTimer:
    "fastai callback timing the training phase of each epoch (validation excluded)"
    def __init__(self): self.times = []
    def __call__(self, learn):
        from fastai.callback.core import Callback
        outer = self
        class _T(Callback):
            order = -9  # before `FeatureCache`, so that a cold epoch includes computing the features
            def before_train(self): self.t = time.perf_counter()
            def after_train(self): outer.times.append(time.perf_counter() - self.t)
        return _T()

def bench_epoch(arch, n_cls=100, shots=16, n_views=0, root=None):
    "One training epoch on a `shots` x `n_cls` split of 256 px images: reference vs fast with a warm feature cache"
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from coop_fast.data import fewshot_dls, fake_images
    from coop_fast.learner import coop_learner, coop_sgd
    clip = load_clip(arch, device=DEV)
    root = Path(root or tempfile.mkdtemp())
    if not (root/'train').exists():
        names = [f'c{i:03d}' for i in range(n_cls)]
        fake_images(root/'train', names, n=shots + 4, size=(256, 256))
    dls = fewshot_dls(root/'train', clip, shots=shots, seed=1, bs=32, test_pct=0, num_workers=WORKERS, device=DEV)
    res = {}
    t_fast = TrainTimer()
    fast = coop_learner(dls, clip_model=clip, feature_cache=n_views, cbs=t_fast(None), precision=AMP or 'fp32')
    with fast.no_bar(), fast.no_logging():
        fast.fit(max(n_views, 1) + 1, lr=2e-3)  # fills the cache (one view per epoch), then a warm epoch
    t_ref = TrainTimer()
    from coop_fast.learner import DeviceMixedPrecision
    ref = Learner(dls, RefCoOp(clip, list(dls.vocab)), loss_func=CrossEntropyLossFlat(), opt_func=coop_sgd,
                  cbs=[t_ref(None)] + ([DeviceMixedPrecision(AMP)] if AMP else []))
    with ref.no_bar(), ref.no_logging(): ref.fit(1, lr=2e-3)
    res.update(n_train=len(dls.train_ds), batches=len(dls.train), n_views=n_views,
               ref_epoch=t_ref.times[-1], fast_cold_epoch=t_fast.times[0], fast_warm_epoch=t_fast.times[-1])
    res['epoch_ratio'] = res['ref_epoch'] / res['fast_warm_epoch']
    return res

def _mem_child(arch, n_cls, which):
    "Peak resident memory (MB) added by one training step, measured in a fresh process"
    clip, ref, fast = models(arch, n_cls)
    m = ref if which == 'ref' else fast
    x, y = batch(clip, n_cls=n_cls)
    report_peak(step_fn(m, m.prompt_learner.ctx, x, y))

def step_memory(arch, n_cls, which):
    "Peak MB of one training step of `which` path, or None when it needs more than `MEM_LIMIT_GB`"
    return child_memory(__file__, arch, n_cls, which)

def bench_memory(arch, classes):
    "Peak memory of one training step per class count; the reference's is extrapolated linearly where it does not fit"
    rows = {n: dict(ref_mem_mb=step_memory(arch, n, 'ref'), fast_mem_mb=step_memory(arch, n, 'fast')) for n in classes}
    fit = [(n, r['ref_mem_mb']) for n, r in rows.items() if r['ref_mem_mb'] is not None]
    if len(fit) >= 2:
        (n0, m0), (n1, m1) = fit[-2], fit[-1]
        slope = (m1 - m0) / (n1 - n0)
        for n, r in rows.items():
            if r['ref_mem_mb'] is None: r['ref_mem_mb_extrapolated'] = m1 + slope * (n - n1)
    for r in rows.values():
        ref = r['ref_mem_mb'] if r['ref_mem_mb'] is not None else r.get('ref_mem_mb_extrapolated')
        r['mem_ratio'] = r['fast_mem_mb'] / ref if ref else None
    return rows

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--archs', nargs='+', default=['ViT-B-32', 'RN50'])
    p.add_argument('--classes', nargs='+', type=int, default=[10, 100, 1000])
    p.add_argument('--reps', type=int, default=3, help='timed repetitions of a train step (median)')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--mem-classes', nargs='*', type=int, default=[250, 500], help='extra class counts for memory only')
    p.add_argument('--skip-epoch', action='store_true')
    p.add_argument('--epoch-classes', type=int, default=100)
    p.add_argument('--epoch-shots', type=int, default=16)
    p.add_argument('--epoch-views', type=int, default=0, help='feature-cache views for the epoch measurement')
    p.add_argument('--only-epoch', action='store_true')
    p.add_argument('--out', default=None, help='write the JSON results here')
    p.add_argument('--device', default='cpu', help='cpu, or cuda: the GPU (memory is not measured there)')
    p.add_argument('--amp', choices=['fp16', 'bf16'], default=None, help='autocast dtype; default fp32')
    p.add_argument('--workers', type=int, default=0, help='DataLoader workers for the epoch measurement')
    p.add_argument('--mem-child', nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    global DEV, AMP, WORKERS
    DEV, AMP, WORKERS = a.device, a.amp, a.workers
    if torch.device(DEV).type == 'cuda': a.skip_memory = True
    if a.mem_child: return _mem_child(a.mem_child[0], int(a.mem_child[1]), a.mem_child[2])
    gpu = torch.cuda.get_device_name() if torch.device(DEV).type == 'cuda' else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {DEV}{f' ({gpu})' if gpu else ''}, "
          f"{AMP or 'fp32'}")
    rows = []
    for arch in a.archs:
        if not a.skip_epoch:
            r = dict(arch=arch, device=DEV, amp=AMP, **bench_epoch(arch, a.epoch_classes, a.epoch_shots, a.epoch_views))
            rows.append(r); print(json.dumps(r), flush=True)
        if a.only_epoch: continue
        mem = {} if a.skip_memory else bench_memory(arch, sorted(set(a.classes) | set(a.mem_classes)))
        for n in sorted(set(a.classes) | set(mem)):
            r = dict(arch=arch, n_cls=n, device=DEV, amp=AMP, **mem.get(n, {}))
            if n in a.classes:
                if mem.get(n, {}).get('ref_mem_mb', 0) is None:
                    r.update(ref_step=f'does not fit in {MEM_LIMIT_GB} GB', **bench_fast_train(arch, n, a.reps))
                else: r.update(bench_train(arch, n, a.reps if n < 500 else 1))
                r.update(bench_eval(arch, n))
            rows.append(r)
            print(json.dumps(r), flush=True)
    if a.out:
        with open(a.out, 'w') as f: json.dump(rows, f, indent=1)

if __name__ == '__main__': main()
