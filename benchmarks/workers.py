"""Where DataLoader worker processes start to pay: one CoOp training epoch (with its validation pass) with 0 workers
against fastai's default (one per CPU, up to 16), over image folders of growing size.

fastai starts its workers afresh for every pass over a DataLoader; each start costs a fork and the first batches of
every worker. On a few hundred images that costs more than decoding them in the main process. `coop_fast.data`
therefore picks the workers of each DataLoader from its number of images (`auto_workers`); this measures the
cross-over. Images are JPEGs of `--size` pixels (photos are 300-500 px), the CLIP is `--arch`.

    python benchmarks/workers.py --arch coop-tiny --images 32 128 512 2048
"""
import argparse, os, tempfile, time, statistics, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch
from PIL import Image
from fastcore.basics import defaults
from coop_fast.clip import load_clip
from coop_fast.data import fewshot_dls
from coop_fast.learner import coop_learner

def folder(d, n, size, n_cls=8):
    "`n` JPEG images of `size` px in `n_cls` class folders under `d`"
    rng = np.random.default_rng(0)
    for i in range(n):
        c = d/f'c{i % n_cls}'; c.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size * 3 // 4, size, 3), dtype='uint8')).save(c/f'{i}.jpg')
    return d

def epoch(d, clip, shots, workers, reps):
    "Median seconds of one training epoch and its validation pass"
    ts = []
    for _ in range(reps):
        dls = fewshot_dls(d, clip, shots=shots, bs=32, test_pct=0, num_workers=workers)
        learn = coop_learner(dls, clip_model=clip, n_ctx=4)
        with learn.no_bar(), learn.no_logging():
            t = time.perf_counter(); learn.fit(1, 1e-3); ts.append(time.perf_counter() - t)
    return statistics.median(ts), len(dls.train.items) + len(dls.valid.items)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='coop-tiny'); p.add_argument('--size', type=int, default=400)
    p.add_argument('--images', type=int, nargs='+', default=[32, 128, 512, 2048])
    p.add_argument('--reps', type=int, default=3)
    a = p.parse_args()
    warnings.simplefilter('ignore')
    clip = load_clip(a.arch, 'auto' if a.arch == 'coop-tiny' else 'random', device='cpu')
    n_def = min(16, defaults.cpus)
    print(f"| images per epoch | 0 workers (s) | {n_def} workers (s) | ratio |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as t:
        for n in a.images:
            d = folder(Path(t)/str(n), n + 8 * 4, a.size)  # + 4 validation images per class
            t0, m = epoch(d, clip, n // 8, 0, a.reps)
            t1, _ = epoch(d, clip, n // 8, n_def, a.reps)
            print(f"| {m} | {t0:.2f} | {t1:.2f} | {t1 / t0:.2f}× |", flush=True)
