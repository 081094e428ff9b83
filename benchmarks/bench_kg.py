"""Cost of one training step with KgCoOp's and ProGrad's callbacks, relative to plain CoOp, through the fastai Learner.

Run: `python benchmarks/bench_kg.py --out benchmarks/kg_results.json` (random-weight ViT-B/32, 100 classes, batch 32 at
224 px, 16 generic context vectors, from cached image features and from images; targets: KgCoOp <= 1.3x, ProGrad <= 2x),
or e.g. `python benchmarks/bench_kg.py --arch coop-test-vit --classes 10 --reps 1` to check that it runs.
A step is one training batch as the Learner runs it (forward, loss, backward, the callbacks' work, optimizer step),
timed from `before_batch` to `after_batch`; the three learners share one CLIP and one training set, and take turns,
`--reps` epochs each; each epoch's first step is left out (warm-up), the median of the others is reported.
"""
import argparse, json, math, os, statistics, tempfile, time
from pathlib import Path
import torch
from fastai.callback.core import Callback, CancelTrainException, CancelValidException
from coop_fast.clip import load_clip
from coop_fast.data import fake_images, fewshot_dls
from coop_fast.learner import coop_learner
from coop_fast.kg import KgCoOp, ProGrad

class StepTimer(Callback):
    "Wall time of each training batch; stop the epoch after `steps` batches, skip validation"
    order = -100  # first at `before_batch`; everything the step does happens before `after_batch`
    def __init__(self, steps): self.steps, self.times = steps, []
    def before_epoch(self): self.epoch_times = []
    def _sync(self):
        if torch.cuda.is_available(): torch.cuda.synchronize()
    def before_batch(self):
        if self.training: self._sync(); self.t = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        self._sync(); self.epoch_times.append(time.perf_counter() - self.t)
        if len(self.epoch_times) >= self.steps: raise CancelTrainException()
    def after_train(self): self.times += self.epoch_times[1:]  # the first step of each epoch warms up
    def before_validate(self): raise CancelValidException()

def bench(arch, n_cls, shots, bs, reps, steps, device, root):
    clip = load_clip(arch, device=device)
    if not (root/'train').exists():
        fake_images(root/'train', [f'c{i:03d}' for i in range(n_cls)], n=shots + 1, size=(256, 256))
    dls = fewshot_dls(root/'train', clip, shots=shots, seed=1, bs=bs, test_pct=0, num_workers=0, device=device)
    rows = []
    for cache in (0, False):
        timers = {m: StepTimer(steps) for m in ('CoOp', 'KgCoOp', 'ProGrad')}
        extra = dict(CoOp=[], KgCoOp=[KgCoOp()], ProGrad=[ProGrad()])
        learns = {m: coop_learner(dls, clip_model=clip, n_ctx=16, feature_cache=cache, cbs=[timers[m], *extra[m]]) for m in timers}
        for r in range(reps):
            names = list(learns)[r % 3:] + list(learns)[:r % 3]  # take turns, starting with another each time
            for m in names:
                with learns[m].no_bar(), learns[m].no_logging(): learns[m].fit_coop(1)
        t = {m: statistics.median(timers[m].times) for m in timers}
        row = dict(arch=arch, n_cls=n_cls, shots=shots, bs=bs, n_ctx=16, source='cached features' if cache is not False else 'images',
                   device=str(device), threads=torch.get_num_threads(), steps_timed=len(timers['CoOp'].times),
                   coop_step=t['CoOp'], kgcoop_step=t['KgCoOp'], prograd_step=t['ProGrad'],
                   kgcoop_ratio=t['KgCoOp'] / t['CoOp'], prograd_ratio=t['ProGrad'] / t['CoOp'])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='ViT-B-32')
    p.add_argument('--classes', type=int, default=100)
    p.add_argument('--shots', type=int, default=None, help='training images per class; default: enough for --steps batches')
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--reps', type=int, default=3, help='epochs per learner, taking turns')
    p.add_argument('--steps', type=int, default=4, help='batches per epoch (the first is not timed)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--data', default=None, help='folder for the generated images (default: a temporary one)')
    p.add_argument('--out', default=None, help='write the JSON results here')
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {a.device}")
    root = Path(a.data or tempfile.mkdtemp())
    shots = a.shots or math.ceil(a.bs * a.steps / a.classes)
    rows = bench(a.arch, a.classes, shots, a.bs, a.reps, a.steps, torch.device(a.device), root)
    print('\n| CLIP | classes | source | CoOp step (s) | KgCoOp (s) | ratio | ProGrad (s) | ratio |\n|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['arch']} | {r['n_cls']} | {r['source']} | {r['coop_step']:.3f} | {r['kgcoop_step']:.3f} | {r['kgcoop_ratio']:.2f}x "
              f"| {r['prograd_step']:.3f} | {r['prograd_ratio']:.2f}x |")
    if a.out:
        with open(a.out, 'w') as f: json.dump(rows, f, indent=1)

if __name__ == '__main__': main()
