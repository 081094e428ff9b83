"""Accuracy and training time of CoOp with and without the frozen image-feature cache (`coop_fast.learner.FeatureCache`).

Few-shot split of scikit-learn's 8x8 handwritten digits (upscaled; 10 classes; `--shots` per class for training,
4 for validation, 40 for test), the paper's augmentation (random resized crop, scale 0.08-1, and flips), CoOp's
recipe (`fit_coop`). Each row trains the same split and seeds with one setting of `feature_cache`:
'none' (augment every epoch), 0 (un-augmented view cached), k (k augmented views cached).

    python benchmarks/feature_cache.py --arch coop-test-vit --epochs 30 --seeds 0 1 2
    python benchmarks/feature_cache.py --arch coop-tiny --pretrained <tag-or-file>
"""
import argparse, os, tempfile, time, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch
from PIL import Image
from sklearn.datasets import load_digits
from fastai.vision.all import ImageDataLoaders, RandomResizedCrop, FlipItem, get_image_files, set_seed
from coop_fast.clip import load_clip, clip_pre
from coop_fast.learner import coop_learner

names = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']

def digits_folder(root, shots, seed=0, n_valid=4, n_test=40, px=48):
    "Few-shot train/valid/test folders of the digits, images upscaled to `px`"
    d = load_digits()
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = rng.permutation(np.nonzero(d.target == c)[0])
        for split, ii in (('train', idx[:shots]), ('valid', idx[shots:shots + n_valid]),
                          ('test', idx[shots + n_valid:shots + n_valid + n_test])):
            (root/split/names[c]).mkdir(parents=True, exist_ok=True)
            for i in ii:
                a = (d.images[i] * 255 / 16).astype(np.uint8)
                Image.fromarray(a).convert('RGB').resize((px, px), Image.BICUBIC).save(root/split/names[c]/f'{i}.png')
    return root

def run(args):
    clip = load_clip(args.arch, None if args.pretrained == 'None' else args.pretrained, device='cpu')
    size = clip_pre(clip).size
    rows = []
    with tempfile.TemporaryDirectory() as d:
        root = digits_folder(Path(d), args.shots, px=int(size * 1.5))
        for fc in args.views:
            accs, secs = [], []
            for seed in args.seeds:
                set_seed(seed)
                dls = ImageDataLoaders.from_folder(root, train='train', valid='valid', bs=32, num_workers=0,
                                                   item_tfms=[RandomResizedCrop(size, min_scale=args.min_scale)] + ([FlipItem()] if args.flip else []))
                learn = coop_learner(dls, clip, n_ctx=args.n_ctx, feature_cache=False if fc == 'none' else int(fc))
                test = dls.test_dl(get_image_files(root/'test'), with_labels=True)  # after the learner added the CLIP's Normalize
                t = time.perf_counter()
                with learn.no_bar(), learn.no_logging(): learn.fit_coop(args.epochs, lr=args.lr)
                secs.append(time.perf_counter() - t)
                accs.append(learn.validate(dl=test)[1])
            rows.append((fc, np.mean(accs), np.std(accs), np.mean(secs)))
            print(f"feature_cache={fc}: test accuracy {np.mean(accs):.3f} ± {np.std(accs):.3f}, fit {np.mean(secs):.1f} s", flush=True)
    print(f"\n{args.arch} ({args.pretrained}), digits {args.shots} shots x 10 classes, crops of {args.min_scale}-1 of the area"
          f"{', flips' if args.flip else ''}, fit_coop({args.epochs}, lr={args.lr}), n_ctx={args.n_ctx}, seeds {args.seeds}\n")
    print("| feature_cache | test accuracy | fit time (s) |\n|---|---|---|")
    for fc, m, s, t in rows: print(f"| {fc} | {m:.3f} ± {s:.3f} | {t:.1f} |")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='coop-test-vit')
    p.add_argument('--pretrained', default='None')
    p.add_argument('--shots', type=int, default=16)
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--n_ctx', type=int, default=16)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--views', nargs='+', default=['none', '0', '1', '4', '16'])
    p.add_argument('--min_scale', type=float, default=0.08, help='smallest random-resized-crop area (the paper: 0.08)')
    p.add_argument('--no_flip', dest='flip', action='store_false', help='no horizontal flips (the paper flips)')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')
    run(args)
