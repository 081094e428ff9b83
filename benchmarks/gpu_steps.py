"""Mixed-precision training steps of CoOp and CoCoOp: finite losses, the frozen CLIP unchanged, the prompt trained.

For each method of the method table that this copy of coop_fast has (CoOp always; CoCoOp when `coop_fast.cocoop` is
there), each autocast precision (fp16 with gradient scaling, bf16) and each CLIP: two epochs of the method's own recipe
on a few fake images, through `Method.learner` as `coop-fast train` builds it. Checked: every training loss is finite,
the run did not stop, every frozen tensor of the model (the whole CLIP) is bit for bit what it was, and every trained
tensor moved.

    python benchmarks/gpu_steps.py --out OUT/steps.json                       # the GPU: coop-test-vit and ViT-B-16 (random weights)
    python benchmarks/gpu_steps.py --out OUT/steps.json --device cpu --archs coop-test-vit   # the same wiring on a CPU
"""
import argparse, importlib.util, json, math, sys, tempfile, time, traceback
from pathlib import Path
import torch
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
from coop_fast.clip import load_clip, clip_pre
from coop_fast.data import fake_images, fewshot_dls
from coop_fast.methods import get_method

class Losses(Callback):
    "Every training loss, as a float"
    def before_fit(self): self.values = []
    def after_loss(self):
        if self.training: self.values.append(float(self.loss.detach().float()))

def available(name):
    "The method `name`, or why it cannot be tried"
    mods = {'cocoop': 'coop_fast.cocoop'}
    if name in mods and importlib.util.find_spec(mods[name]) is None: return None, f"{mods[name]} is not in this copy of coop_fast"
    try: return get_method(name), None
    except ValueError as e: return None, str(e)

def check(m, arch, precision, device, imgs):
    "Two epochs of method `m` on CLIP `arch` in `precision` on `device`: the checks and the losses"
    set_seed(0)
    clip = load_clip(arch, device=device)
    dls = fewshot_dls(imgs, clip, shots=4, seed=1, bs=4, test_pct=0, num_workers=0, device=device)
    hp = {k: 4 for k in ('n_ctx',) if k in m.hparams}
    learn = m.learner(dls, clip_model=clip, precision=precision, feature_cache=False, **hp)
    model = learn.model
    trained = {n: p.detach().clone() for n, p in model.trainable().items()}
    frozen = {n: t.detach().clone() for n, t in model.state_dict().items() if n not in trained}
    cb = Losses()
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): getattr(learn, m.fit)(2, lr=m.lr, cbs=cb)
    if device.startswith('cuda'): torch.cuda.synchronize()
    changed = [n for n, t0 in frozen.items() if not torch.equal(model.state_dict()[n], t0)]
    still = [n for n, p in model.trainable().items() if torch.equal(p.detach(), trained[n])]
    res = dict(method=m.name, arch=arch, precision=precision, device=str(next(model.parameters()).device), seconds=round(time.perf_counter() - t, 2),
               losses=cb.values, finite=bool(cb.values) and all(math.isfinite(v) for v in cb.values),
               stopped=learn.coop_summary.get('stopped'), frozen_tensors=len(frozen), frozen_changed=changed[:10],
               trained_tensors=len(trained), trained_unchanged=still)
    res['ok'] = res['finite'] and not res['stopped'] and not changed and not still
    return res

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', required=True)
    p.add_argument('--device', default='cuda')
    p.add_argument('--archs', nargs='+', default=None, help='default: coop-test-vit, and ViT-B-16 (random weights) on a GPU')
    p.add_argument('--methods', nargs='+', default=['coop', 'cocoop'])
    p.add_argument('--precisions', nargs='+', default=['fp16', 'bf16'])
    a = p.parse_args()
    if a.device.startswith('cuda') and not torch.cuda.is_available(): sys.exit("No CUDA GPU: run with --device cpu for the CPU check.")
    archs = a.archs or (['coop-test-vit', 'ViT-B-16'] if a.device.startswith('cuda') else ['coop-test-vit'])
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for arch in archs:
            s = clip_pre(load_clip(arch, device='cpu')).size
            imgs = fake_images(Path(d)/arch/'imgs', classes=('cat', 'dog', 'bird', 'fish'), n=6, size=(s, s))
            for name in a.methods:
                m, why = available(name)
                for prec in a.precisions:
                    if m is None: r = dict(method=name, arch=arch, precision=prec, ok=None, skipped=why)
                    elif prec == 'bf16' and a.device.startswith('cuda') and not torch.cuda.is_bf16_supported():
                        r = dict(method=name, arch=arch, precision=prec, ok=None, skipped='this GPU has no bfloat16')
                    else:
                        try: r = check(m, arch, prec, a.device, imgs)
                        except Exception: r = dict(method=name, arch=arch, precision=prec, ok=False, error=traceback.format_exc()[-3000:])
                    rows.append(r)
                    print(f"{name:8} {arch:14} {prec}: " + ('skipped: ' + r['skipped'] if r['ok'] is None else 'ok' if r['ok'] else 'FAILED')
                          + (f" (losses {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}, {r['seconds']} s)" if r.get('losses') else ''), flush=True)
                    if r.get('error'): print(r['error'], file=sys.stderr)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    sys.exit(1 if any(r['ok'] is False for r in rows) else 0)

if __name__ == '__main__': main()
