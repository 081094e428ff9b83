"""Wall time of each feature-level method's whole fit and evaluation on cached image features, next to CoOp's.

A few-shot split of generated images (`--classes` classes, `--shots` training, `--n_valid` validation and `--n_test`
test images per class) is encoded once by a random-weight CLIP (`--arch`): `--views` augmented views of each training
image with the official crops (`coop_fast.adapters.train_views`), the plain view of the validation and test images.
That encoding is timed separately and is not part of any method's time. Then each method, from its model's creation
(including its zero-shot text classifier) to its test accuracy, on those features: Tip-Adapter (cache + alpha/beta search
on validation), Tip-Adapter-F (+ AdamW fine-tuning, batches of 256, one cached view drawn per image and epoch), CLIP-Adapter
and CoOp (their recipes, batches of 32, one cached view per image and epoch), GDA (Gaussians + alpha search), and zero-shot
CLIP. Accuracies on random weights and generated images mean nothing; they are printed to show each method ran.

    python benchmarks/bench_adapters.py                                  # 16 shots x 100 classes, ViT-B-32, the papers' epochs
    python benchmarks/bench_adapters.py --arch coop-test-vit --classes 10 --shots 4 --views 2 --epochs 2 --tip_f_epochs 2 --repeats 1
"""
import argparse, json, os, statistics, tempfile, time, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch, torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from coop_fast.clip import load_clip
from coop_fast.data import fake_images, fewshot_dls
from coop_fast.learner import FeatureDL, PromptCallback, prompt_splitter, image_features
from coop_fast.prompt import CoOpModel
from coop_fast.baselines import ZeroShotModel
from coop_fast.methods import paper_epochs
from coop_fast.adapters import (TipAdapterModel, TipAdapterFModel, ClipAdapterModel, GDAModel, train_views, tip_keys, tip_config,
                                search_tip, gda_classifier, search_gda)

def feature_learner(model, feats, bs):
    "A fastai `Learner` of `model` on cached features: `feats` holds (features (views, n, dim), labels) for train, valid, test"
    (tf, ty), (vf, vy), _ = feats
    dls = DataLoaders(FeatureDL(tf, ty, bs=bs, shuffle=True, drop_last=len(ty) >= bs), FeatureDL(vf, vy, bs=256))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, splitter=prompt_splitter, cbs=PromptCallback())

@torch.no_grad()
def test_acc(model, feats):
    "Test accuracy of `model` on the cached test features"
    f, y = feats[2]
    return (model(f[0]).argmax(-1) == y).float().mean().item()

def valid_norm(feats): return F.normalize(feats[1][0][0].float(), dim=-1), feats[1][1]

def zeroshot(clip, names, feats, args):
    return test_acc(ZeroShotModel(clip, names), feats)

def tip_adapter(clip, names, feats, args):
    m = TipAdapterModel(clip, names)
    m.set_cache(tip_keys(feats[0][0]), feats[0][1])
    beta, alpha, _ = search_tip(m, *valid_norm(feats), **{k: tip_config()[k] for k in ('search_scale', 'search_step')})
    m.set_hypers(alpha, beta)
    return test_acc(m, feats)

def tip_adapter_f(clip, names, feats, args):
    m = TipAdapterFModel(clip, names)
    m.set_cache(tip_keys(feats[0][0]), feats[0][1])
    learn = feature_learner(m, feats, 256)
    with learn.no_bar(), learn.no_logging(): learn.fit_tip_adapter_f(args.tip_f_epochs)  # searches alpha, beta on the valid features
    return test_acc(m, feats)

def clip_adapter(clip, names, feats, args):
    learn = feature_learner(ClipAdapterModel(clip, names), feats, 32)
    with learn.no_bar(), learn.no_logging(): learn.fit_clip_adapter(args.epochs or paper_epochs(args.shots))
    return test_acc(learn.model, feats)

def gda(clip, names, feats, args):
    m = GDAModel(clip, names)
    (tf, ty) = feats[0]
    m.set_classifier(*gda_classifier(F.normalize(tf.float(), dim=-1).flatten(0, 1), ty.repeat(len(tf)), len(names)))
    m.set_alpha(search_gda(m, *valid_norm(feats))[0])
    return test_acc(m, feats)

def coop(clip, names, feats, args):
    learn = feature_learner(CoOpModel(clip, names, n_ctx=16), feats, 32)
    with learn.no_bar(), learn.no_logging(): learn.fit_coop(args.epochs or paper_epochs(args.shots))
    return test_acc(learn.model, feats)

runs = {'Zero-shot CLIP': zeroshot, 'Tip-Adapter': tip_adapter, 'Tip-Adapter-F': tip_adapter_f, 'CLIP-Adapter': clip_adapter,
        'GDA': gda, 'CoOp (M=16)': coop}

def encode(clip, args, d):
    "Cached features (views, n, dim) and labels of the train, valid and test images of a generated split, and the class names"
    names = [f'class {i}' for i in range(args.classes)]
    n = args.shots + args.n_valid + args.n_test
    imgs = fake_images(Path(d)/'imgs', classes=names, n=n)
    dls = fewshot_dls(imgs, clip, shots=args.shots, n_valid=args.n_valid, test_pct=args.n_test / n, bs=64, num_workers=0)
    zs = ZeroShotModel(clip, dls.vocab)
    train = train_views(zs, dls.train, args.views)
    valid, test = [(f[None], y) for f, y in (image_features(zs, dl, progress=False) for dl in (dls.valid, dls.test))]
    return list(dls.vocab), (train, valid, test)

def run(args):
    torch.set_num_threads(args.threads)
    clip = load_clip(args.arch, None if args.pretrained == 'None' else args.pretrained, device=args.device)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        set_seed(0)
        t = time.perf_counter()
        names, feats = encode(clip, args, d)
        enc = time.perf_counter() - t
    feats = [(f.to(args.device), y.to(args.device)) for f, y in feats]
    print(f"{args.arch} (random weights), {args.classes} classes, {args.shots} shots, {args.views} views: train features "
          f"{tuple(feats[0][0].shape)}, valid {len(feats[1][1])}, test {len(feats[2][1])}; encoding them took {enc:.0f} s", flush=True)
    rows = []
    for name in args.methods:
        secs = []
        for _ in range(args.repeats):
            set_seed(0)
            t = time.perf_counter()
            acc = runs[name](clip, names, feats, args)
            if args.device.startswith('cuda'): torch.cuda.synchronize()
            secs.append(time.perf_counter() - t)
        rows.append(dict(method=name, seconds=round(statistics.median(secs), 2), runs=[round(s, 2) for s in secs], test_accuracy=round(acc, 4)))
        print(rows[-1], flush=True)
    epochs = args.epochs or paper_epochs(args.shots)
    print(f"\nfit + evaluation on cached features; CoOp and CLIP-Adapter {epochs} epochs, Tip-Adapter-F {args.tip_f_epochs}; "
          f"{args.threads} thread(s), device {args.device}\n")
    print(f"| method | fit + evaluation (s, median of {args.repeats}) | CoOp's time / this |\n|---|---|---|")
    coop_s = next((r['seconds'] for r in rows if r['method'].startswith('CoOp')), None)
    for r in rows: print(f"| {r['method']} | {r['seconds']:.2f} | " + (f"{coop_s / max(r['seconds'], 1e-9):.1f} |" if coop_s else "— |"))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(settings=vars(args), encode_seconds=round(enc, 1), rows=rows,
                                                  torch=torch.__version__), indent=1))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='ViT-B-32')
    p.add_argument('--pretrained', default='None', help="weights; 'None' for random weights")
    p.add_argument('--classes', type=int, default=100)
    p.add_argument('--shots', type=int, default=16)
    p.add_argument('--n_valid', type=int, default=4)
    p.add_argument('--n_test', type=int, default=10)
    p.add_argument('--views', type=int, default=10, help='augmented views of each training image (official: 10)')
    p.add_argument('--epochs', type=int, default=None, help="CoOp's and CLIP-Adapter's epochs; default CoOp's for the shots")
    p.add_argument('--tip_f_epochs', type=int, default=20)
    p.add_argument('--methods', nargs='+', default=list(runs), choices=list(runs))
    p.add_argument('--repeats', type=int, default=3, help='runs of each method; the median time is reported')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default=None, help='write the results as JSON here')
    run(p.parse_args())
