"""A learned prompt in production: bake, ONNX export, onnxruntime check, file sizes and CPU latency.

Run: `python benchmarks/deploy.py --out benchmarks/deploy.json` (coop-tiny, and random-weight ViT-B/32 and RN50:
a few minutes on 2 CPU cores), or `--archs coop-tiny` for a quick look.

For each CLIP: a CoOp prompt (16 context vectors, seeded random values) for `--classes` classes is baked
(`coop_fast.deploy.bake`) and the head's logits compared with the `CoOpModel`'s on a batch of random images; image encoder +
head are exported as one ONNX graph (`export_onnx`, TorchScript exporter, opset 17) and the graph run with onnxruntime on
the CPU and compared with PyTorch on another batch; then the per-image latency of onnxruntime and of PyTorch (eager,
`ImageClassifier` under `torch.no_grad`) is measured at batch 1 and batch `--bs`: the median of `--reps` timed runs after
one warm-up, with `--threads` threads in both.
"""
import argparse, json, os, platform, statistics, tempfile, time
from pathlib import Path
import numpy as np, torch
import onnxruntime as ort
import coop_fast
from coop_fast.clip import load_clip, clip_pre
from coop_fast.prompt import CoOpModel
from coop_fast.deploy import bake, export_onnx, ImageClassifier

def classnames(n): return [f'class {i} {w}' for i, w in zip(range(n), ['dog', 'sea lion', 'golden retriever', 'airliner', 'tabby cat'] * n)]

def images(clip, n, seed):
    s = clip_pre(clip).size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))

def median_time(f, reps):
    "Median seconds of `f()` over `reps` runs, after one warm-up run"
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def measure(arch, n_cls, bs, reps, threads, folder):
    torch.manual_seed(0)
    clip = load_clip(arch, device='cpu')
    model = CoOpModel(clip, classnames(n_cls), n_ctx=16).eval()
    x = images(clip, 4, seed=1)
    with torch.no_grad(): want = model(x)
    t = time.perf_counter(); head = bake(model); t_bake = time.perf_counter() - t
    with torch.no_grad(): got = head(clip.encode_image(x))
    path = Path(folder)/f'{arch}.onnx'
    t = time.perf_counter(); path, check = export_onnx(head, path, clip=clip); t_export = time.perf_counter() - t
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    ic = ImageClassifier(clip, head).eval()
    res = dict(arch=arch, n_classes=n_cls, image_size=clip_pre(clip).size, params_image_tower=sum(p.numel() for p in clip.visual.parameters()),
               bake_s=round(t_bake, 3), export_s=round(t_export, 2), onnx_mb=round(path.stat().st_size / 1e6, 2),
               baked_max_abs_logit=(got - want).abs().max().item(), logit_scale=head.logit_scale.item(),
               onnx_max_abs_logit=check['max_abs_logit'], onnx_max_abs_prob=check['max_abs_prob'], onnx_tol_logit=check['tol_logit'])
    for b in (1, bs):
        xb = images(clip, b, seed=2)
        xn = xb.numpy()
        with torch.no_grad(): pt = median_time(lambda: ic(xb), reps)
        on = median_time(lambda: sess.run(['probabilities'], {'images': xn}), reps)
        res[f'ms_per_image_onnxruntime_bs{b}'] = round(1000 * on / b, 2)
        res[f'ms_per_image_torch_bs{b}'] = round(1000 * pt / b, 2)
    path.unlink()
    return res

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--archs', nargs='+', default=['coop-tiny', 'ViT-B-32', 'RN50'])
    ap.add_argument('--classes', type=int, default=10, help='classes of the prompt')
    ap.add_argument('--bs', type=int, default=16, help='the larger batch size timed (batch 1 is timed too)')
    ap.add_argument('--reps', type=int, default=10, help='timed runs per measurement (median)')
    ap.add_argument('--threads', type=int, default=2, help='threads of onnxruntime and torch')
    ap.add_argument('--note', default='', help='recorded with the results, e.g. whether the machine was shared')
    ap.add_argument('--out', default=None, help='JSON file to write the results to')
    a = ap.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    torch.set_num_threads(a.threads)
    settings = dict(classes=a.classes, bs=a.bs, reps=a.reps, threads=a.threads, note=a.note, cpu=platform.processor() or platform.machine(),
                    cpu_count=os.cpu_count(), torch=torch.__version__, onnxruntime=ort.__version__, coop_fast=coop_fast.__version__,
                    time=time.strftime('%Y-%m-%d %H:%M'))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for arch in a.archs:
            rows.append(r := measure(arch, a.classes, a.bs, a.reps, a.threads, d))
            print(json.dumps(r), flush=True)
    print(f"\nSettings: {json.dumps(settings)}\n")
    print(f"| CLIP | ONNX file (MB) | baked vs CoOpModel, max abs logit diff | ONNX vs PyTorch, max abs logit / prob diff | "
          f"ms/image onnxruntime, bs 1 / {a.bs} | ms/image PyTorch, bs 1 / {a.bs} |")
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['arch']} ({r['image_size']} px) | {r['onnx_mb']:.1f} | {r['baked_max_abs_logit']:.1e} | {r['onnx_max_abs_logit']:.1e} / "
              f"{r['onnx_max_abs_prob']:.1e} | {r['ms_per_image_onnxruntime_bs1']:.1f} / {r[f'ms_per_image_onnxruntime_bs{a.bs}']:.1f} | "
              f"{r['ms_per_image_torch_bs1']:.1f} / {r[f'ms_per_image_torch_bs{a.bs}']:.1f} |")
    if a.out: Path(a.out).write_text(json.dumps(dict(settings=settings, results=rows), indent=1))

if __name__ == '__main__': main()
