"""The benchmark protocol in miniature with and without the feature store: wall time, time in the image tower, accuracies.

Fake copies of benchmark data sets (`coop_fast.datasets.fake_dataset`, their real layouts), the project's tiny pretrained
CLIP `coop-tiny`, CoOp with the training-feature cache (`--feature_cache 0`): every `coop-fast train` run of
datasets × shots × seeds, in this process (`coop_fast.cli.main`), first with `--no_feature_store`, then with a fresh
feature store (the first run of each data set computes its test features, the others read them). Image-tower time is
measured with forward hooks on the CLIP's image tower. The records of the two sweeps must be the same bit for bit.

Run (the full size, on a quiet machine): `python benchmarks/bench_store.py --out benchmarks/bench_store.json`;
`--small` is the quick check (a few images, few epochs). `--help` lists the sizes.
"""
import argparse, contextlib, io, json, os, platform, shutil, tempfile, time
from pathlib import Path
import torch
from coop_fast.cli import main
from coop_fast.datasets import fake_dataset
from coop_fast.export import read_prompt

class TowerTimer:
    "Wall time spent in the forward passes of CLIP image towers (open_clip's VisionTransformer / ModifiedResNet)"
    towers = ('VisionTransformer', 'ModifiedResNet')
    def __init__(self): self.total, self.calls, self.t0, self.hooks = 0., 0, None, []
    def _sync(self, m):
        p = next(m.parameters(), None)
        if p is not None and p.is_cuda: torch.cuda.synchronize(p.device)
    def pre(self, m, args):
        if type(m).__name__ in self.towers and self.t0 is None: self._sync(m); self.t0 = time.perf_counter()
    def post(self, m, args, out):
        if type(m).__name__ in self.towers and self.t0 is not None:
            self._sync(m); self.total += time.perf_counter() - self.t0; self.calls += 1; self.t0 = None
    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook, register_module_forward_hook
        self.hooks = [register_module_forward_pre_hook(self.pre), register_module_forward_hook(self.post)]
        return self
    def __exit__(self, *a):
        for h in self.hooks: h.remove()

def train(args):
    "Run `coop-fast train ARGS` here, quietly; its exit status must be 0"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    if code: raise RuntimeError(f"coop-fast train failed ({code}): {err.getvalue()[-3000:]}")

def sweep(a, root, runs, store):
    "Every run of the grid; wall time, tower time, and the records and contexts by run name"
    extra = ['--no_feature_store'] if store is None else ['--feature_store', store]
    recs, ctx = {}, {}
    with TowerTimer() as tt:
        t = time.perf_counter()
        for d in a.datasets:
            for k in a.shots:
                for s in a.seeds:
                    name = f'{d}_{k}_{s}'
                    f = runs/f'{name}.safetensors'
                    train(['train', d, '--root', root, '--shots', k, '--seed', s, '--arch', 'coop-tiny', '--pretrained', 'auto',
                           '--feature_cache', 0, '--bs', a.bs, '--workers', 0, '--device', a.device, '--quiet', '--out', f,
                           *(['--epochs', a.epochs] if a.epochs else []), *extra])
                    recs[name] = json.loads(f.with_suffix('.json').read_text())
                    ctx[name] = read_prompt(f)[0]['prompt_learner.ctx']
        wall = time.perf_counter() - t
    return dict(wall_s=wall, tower_s=tt.total, tower_calls=tt.calls), recs, ctx

def plain(r): return {k: v for k, v in r.items() if k not in ('time', 'seconds', 'prompt')}

def main_():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--datasets', nargs='+', default=['EuroSAT', 'DescribableTextures', 'OxfordPets'])
    p.add_argument('--shots', nargs='+', type=int, default=[1, 4])
    p.add_argument('--seeds', nargs='+', type=int, default=[1, 2, 3])
    p.add_argument('--images', nargs=3, type=int, default=None, metavar=('TRAIN', 'VAL', 'TEST'),
                   help='fake images per class in each split (5 classes per data set); default 16 4 200 (--small: 4 2 20)')
    p.add_argument('--epochs', type=int, default=None, help="training epochs; default CoOp's for the shots (50 to 200)")
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None, help='torch threads; default torch\'s')
    p.add_argument('--small', action='store_true', help='the quick check: 4 train, 2 val, 20 test images per class, 3 epochs')
    p.add_argument('--out', default=None, help='write the JSON results here')
    a = p.parse_args()
    a.images = a.images or ([4, 2, 20] if a.small else [16, 4, 200])
    if a.small: a.epochs = a.epochs or 3
    if a.threads: torch.set_num_threads(a.threads)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    tmp = Path(tempfile.mkdtemp(prefix='bench_store'))
    try:
        root = tmp/'data'
        for d in a.datasets: fake_dataset(d, root, n=tuple(a.images))
        train(['train', a.datasets[0], '--root', root, '--shots', 1, '--epochs', 1, '--arch', 'coop-tiny', '--workers', 0,
               '--device', a.device, '--quiet', '--feature_cache', 0, '--no_feature_store', '--out', tmp/'warmup.safetensors'])
        without, r0, c0 = sweep(a, root, tmp/'runs_plain', None)
        with_, r1, c1 = sweep(a, root, tmp/'runs_store', tmp/'store')
        same = all(plain(r0[n]) == plain(r1[n]) for n in r0) and all(torch.equal(c0[n], c1[n]) for n in c0)
        res = dict(settings=dict(datasets=a.datasets, shots=a.shots, seeds=a.seeds, images_per_class=a.images, classes_per_dataset=5,
                                 epochs=a.epochs or "CoOp's", bs=a.bs, device=a.device, arch='coop-tiny', feature_cache=0,
                                 runs=len(r0), torch=torch.__version__, threads=torch.get_num_threads(), cpus=os.cpu_count(),
                                 machine=platform.processor() or platform.machine(), load_avg=os.getloadavg()),
                   without_store=without, with_store=with_, speedup=without['wall_s'] / with_['wall_s'],
                   tower_share_without=without['tower_s'] / without['wall_s'], tower_share_with=with_['tower_s'] / with_['wall_s'],
                   same_records_and_prompts=same, store_entries=len(list((tmp/'store').glob('*.safetensors'))),
                   accuracy_mean=sum(r['accuracy'] for r in r0.values()) / len(r0))
        print(json.dumps(res, indent=1))
        print(f"\n| | wall (s) | image tower (s) | share in the tower |\n|---|---|---|---|\n"
              f"| without the store | {without['wall_s']:.1f} | {without['tower_s']:.1f} | {res['tower_share_without']:.0%} |\n"
              f"| with the store | {with_['wall_s']:.1f} | {with_['tower_s']:.1f} | {res['tower_share_with']:.0%} |\n\n"
              f"{len(r0)} runs; speed-up {res['speedup']:.2f}x; records and prompts the same bit for bit: {same}")
        if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
        if not same: raise SystemExit("The sweeps with and without the store differ.")
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main_()
