"""Fit + evaluation time of the validation-free heads (LP++, CLAP, TaskRes, ProKeR) on cached image features.

The features are random, class-structured and normalised (`features`: a mean per class plus noise, the views of a
training image that image plus a little noise), with an unnormalised random text classifier of norm about 3·√dim, so
that every method sees what its learner would hold after encoding the images once. Each method is timed from the
features to its test accuracy (its fit, its hyper-parameter search where it has one, its test logits), with its
official recipe: LP++ 300 full-batch steps, the step kept on the validation features (`lpp_fit`); CLAP 300 epochs of
SGD on `--clap_views` views (`clap_fit`); TaskRes `fit_taskres` for 200 epochs (16 shots) through fastai's loop on a
`FeatureDL` (validation every epoch, as `taskres_learner` does); ProKeR `search_proker` over the default grid (20 β ×
10 λ) on the validation features, then `fit_coef`. The models' zero-shot text classifiers are set from the random
ones: building them (the text tower) is not timed. Medians of `--repeats` runs, the methods taking turns.

    python benchmarks/bench_heads.py --out benchmarks/heads.json                  # 16 shots x 100 classes
    python benchmarks/bench_heads.py --classes 1000 --repeats 1 --methods lp++ clap proker
"""
import argparse, json, math, os, statistics, time, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch, torch.nn as nn, torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastcore.basics import defaults
from fastai.callback.progress import ProgressCallback
from coop_fast.clip import load_clip
from coop_fast.learner import FeatureDL, PromptCallback, prompt_splitter
from coop_fast.heads import LPPModel, ClapModel, lpp_fit, clap_fit
from coop_fast.heads2 import TaskResModel, ProKeRModel, search_proker, proker_grid, taskres_epochs

def features(n_cls:int, shots:int, d:int=512, views:int=1, n_val:int=4, n_test:int=10, seed:int=0) -> dict:
    "Random normalised features: train `(views, n, d)` with labels, valid and test `(m, d)` with labels, and raw text `(n_cls, d)`"
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n_cls, d, generator=g)
    def draw(k):
        y = torch.arange(n_cls).repeat_interleave(k)
        return mu[y] + 1.5 * torch.randn(len(y), d, generator=g), y
    img, y = draw(shots)
    tr = torch.stack([img] + [img + 0.3 * torch.randn(img.shape, generator=g) for _ in range(views - 1)])
    (fv, yv), (ft, yt) = draw(n_val), draw(n_test)
    text = 3 * (mu + torch.randn(n_cls, d, generator=g))
    nz = lambda t: F.normalize(t, dim=-1)
    return dict(train=nz(tr), y=y, valid=nz(fv), yv=yv, test=nz(ft), yt=yt, text=text)

def _set(m, **bufs):
    for n, t in bufs.items(): m.register_buffer(n, t.clone(), persistent=False)

def _acc(logits, y): return (logits.argmax(-1) == y).float().mean().item()

def lpp(clip, names, x, args):
    m = LPPModel(clip, names); _set(m, text=F.normalize(x['text'], dim=-1))
    r = lpp_fit(x['train'][0], x['y'], m.text, 300, x['valid'], x['yv'])
    m.set_fit(r['weight'], r['bias'], r['alpha'])
    with torch.no_grad(): return _acc(m(x['test']), x['yt'])

def clap(clip, names, x, args):
    m = ClapModel(clip, names); _set(m, base=x['text'], text=F.normalize(x['text'], dim=-1))
    f = x['train'][:args.clap_views]
    r = clap_fit(f.flatten(0, 1), x['y'].repeat(len(f)), m.base, m.logit_scale, len(x['y']), 300)
    m.load_state(dict(prototypes=r['prototypes']))
    with torch.no_grad(): return _acc(m(x['test']), x['yt'])

def taskres(clip, names, x, args):
    m = TaskResModel(clip, names); _set(m, base=x['text'], text=F.normalize(x['text'], dim=-1))
    m.residual = nn.Parameter(torch.zeros_like(m.base))
    dls = DataLoaders(FeatureDL(x['train'][:1], x['y'], bs=256, shuffle=True), FeatureDL(x['valid'][None], x['yv'], bs=256))
    learn = Learner(dls, m, loss_func=CrossEntropyLossFlat(), splitter=prompt_splitter, cbs=PromptCallback())
    with learn.no_bar(), learn.no_logging(): learn.fit_taskres(taskres_epochs(args.shots))
    with torch.no_grad(): return _acc(m(x['test']), x['yt'])

def proker(clip, names, x, args):
    m = ProKeRModel(clip, names); _set(m, text=F.normalize(x['text'], dim=-1))
    f = x['train'][:args.proker_views]
    m.set_cache(f.flatten(0, 1), x['y'].repeat(len(f)), 1., 1.)
    beta, lmbda, _ = search_proker(m, x['valid'], x['yv'], *proker_grid())
    m.fit_coef(beta, lmbda)
    with torch.no_grad(): return _acc(m(x['test']), x['yt'])

runs = {'lp++': lpp, 'clap': clap, 'taskres': taskres, 'proker': proker}

def run(args):
    torch.set_num_threads(args.threads)
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]
    clip = load_clip('coop-test-vit')  # its logit scale only (set to 100) and the models' plumbing: the text is replaced
    with torch.no_grad(): clip.logit_scale.fill_(math.log(100.))
    names = [f'c{i}' for i in range(args.classes)]
    x = features(args.classes, args.shots, args.dim, max(args.clap_views, args.proker_views))
    print(f"{args.classes} classes x {args.shots} shots, dim {args.dim}: train {tuple(x['train'].shape)}, "
          f"valid {len(x['yv'])}, test {len(x['yt'])}; {args.threads} thread(s)", flush=True)
    secs, accs = {n: [] for n in args.methods}, {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(args.repeats):
            for n in args.methods:  # the methods take turns
                torch.manual_seed(0)
                t = time.perf_counter()
                accs[n] = runs[n](clip, names, x, args)
                secs[n].append(time.perf_counter() - t)
                print(n, f'{secs[n][-1]:.2f} s', flush=True)
    rows = [dict(method=n, seconds=round(statistics.median(s), 2), runs=[round(v, 2) for v in s],
                 test_accuracy=round(accs[n], 4)) for n, s in secs.items()]
    print(f"\n| method | fit + evaluation (s, median of {args.repeats}) | test accuracy |\n|---|---|---|")
    for r in rows: print(f"| {r['method']} | {r['seconds']:.2f} | {r['test_accuracy']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(settings=vars(args), rows=rows, torch=torch.__version__), indent=1))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--classes', type=int, default=100)
    p.add_argument('--shots', type=int, default=16)
    p.add_argument('--dim', type=int, default=512)
    p.add_argument('--clap_views', type=int, default=20, help="CLAP's views of each training image (official: 20)")
    p.add_argument('--proker_views', type=int, default=1,
                   help="ProKeR's views (official: 10; 16 shots x 100 classes x 10 views is 16,000 keys, an O(n³) solve per β)")
    p.add_argument('--methods', nargs='+', default=list(runs), choices=list(runs))
    p.add_argument('--repeats', type=int, default=3, help='runs of each method; the median time is reported')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=None, help='write the results as JSON here')
    run(p.parse_args())
