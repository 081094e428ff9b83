"""Deep prompts, reference vs coop_fast: IVLP, MaPLe and PromptSRC train step, peak memory, exactness.

Run: `python benchmarks/bench_deep.py --out benchmarks/deep_results.json` (the full grid: ViT-B/32 and ViT-B/16, 100 and
1000 classes, the three methods; hours on 2 CPU cores), or e.g. `python benchmarks/bench_deep.py --archs ViT-B-32
--classes 10 --methods maple --reps 1` for a quick look. Random-weight CLIPs, batch 4 at 224 px, fp32, each method with
its official defaults (IVLP 2+2 tokens in 12 blocks, MaPLe 2 in 9, PromptSRC 4+4 in 9). The straightforward path is
`coop_fast.reference` (`RefIVLP`, `RefMaPLe`, `RefPromptSRC` + `ref_promptsrc_loss`: the official code's order of
operations, 77-token prompts of every class through every text block on every step); the fast path is `coop_fast.deep`
(text tower cut after the last EOT, the class-independent prefix encoded once per block; the same prompted image tower).
The "bound" is the reference step over the fast path's image tower alone (forward and backward): the ratio a fast
path whose text part cost nothing would reach. `--table results.json` prints the markdown table.
Both share one CLIP and the same prompt values. A step is forward, backward and SGD step; the two paths alternate.
PromptSRC's frozen text features are computed once, outside the step, from one template ("a photo of a {}.") for both
paths (its 60-template average costs the same for both and is not part of a step).
"""
import argparse, json, os, sys
from pathlib import Path
import torch, torch.nn.functional as F
from coop_fast.clip import load_clip, clip_pre
from coop_fast.deep import IVLPModel, MaPLeModel, PromptSRCModel, src_terms
from coop_fast.reference import RefIVLP, RefMaPLe, RefPromptSRC, ref_promptsrc_loss
sys.path.insert(0, str(Path(__file__).parent))
from bench_coop import classnames, alternate
from bench_common import MEM_LIMIT_GB, report_peak, child_memory

DEFAULTS = dict(ivlp=dict(n_ctx_text=2, n_ctx_vision=2, depth_text=12, depth_vision=12),
                maple=dict(n_ctx=2, depth=9), promptsrc=dict(n_ctx_text=4, n_ctx_vision=4, depth_text=9, depth_vision=9))

def pairs(method, m, r):
    "(fast tensor name, reference tensor) of every trained tensor"
    if method == 'maple':
        pl = r.prompt_learner
        ps = [('text_prompts.0', pl.ctx)] + [(f'text_prompts.{i + 1}', p) for i, p in enumerate(pl.compound_prompts_text)]
        for i, c in enumerate([pl.proj, *pl.compound_prompt_projections]): ps += [(f'couplers.{i}.weight', c.weight), (f'couplers.{i}.bias', c.bias)]
        return ps
    ps = [('text_prompts.0', r.prompt_learner.ctx)] + [(f'text_prompts.{i + 1}', p) for i, p in enumerate(r.text_vpt)]
    return ps + [('vision_prompts.0', r.vpt)] + [(f'vision_prompts.{i + 1}', p) for i, p in enumerate(r.vision_vpt)]

def models(arch, method, n_cls):
    "Reference and fast model of `method` over one random-weight CLIP, holding the same prompt values"
    clip, names, kw = load_clip(arch, device='cpu'), classnames(n_cls), DEFAULTS[method]
    if method == 'ivlp': m, r = IVLPModel(clip, names, **kw), RefIVLP(clip, names, **kw)
    elif method == 'maple': m, r = MaPLeModel(clip, names, **kw), RefMaPLe(clip, names, **kw)
    else:
        m, r = PromptSRCModel(clip, names, **kw), RefPromptSRC(clip, names, ['a photo of a {}.'], **kw)
        m._frozen = F.normalize(r.fixed_embeddings.float(), dim=-1)
    ts = m.trainable()
    with torch.no_grad():
        for n, p in pairs(method, m, r): p.copy_(ts[n])
    return clip, m.train(), r.eval()

def batch(clip, n_cls, bs=4, seed=0):
    g, s = torch.Generator().manual_seed(seed), clip_pre(clip).size
    return torch.randn(bs, 3, s, s, generator=g), torch.randint(0, n_cls, (bs,), generator=g)

def loss_fn(method, model, x, y, ref):
    "The training loss of `model` (the reference when `ref`) on `x`, `y`"
    if method != 'promptsrc': return lambda: F.cross_entropy(model(x), y)
    if ref: return lambda: ref_promptsrc_loss(model(x, y))
    def fast():
        logits = model(x)
        return F.cross_entropy(logits, y) + src_terms(model, x, logits)
    return fast

def step_fn(params, loss, lr=0.0035):
    "One step of the official recipe (SGD, momentum 0.9, weight decay 5e-4) on `params`"
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    def step():
        l = loss()
        opt.zero_grad(); l.backward(); opt.step()
    return step

def bench_step(arch, method, n_cls, reps, bs):
    clip, m, r = models(arch, method, n_cls)
    x, y = batch(clip, n_cls, bs)
    with torch.no_grad(): diff = (m.eval()(x) - r(x)).abs().max().item()
    m.train()
    params = list(m.trainable().values())
    tr, tf = alternate(step_fn([p for _, p in pairs(method, m, r)], loss_fn(method, r, x, y, True)),
                       step_fn(params, loss_fn(method, m, x, y, False)), reps)
    ti, _ = alternate(step_fn(params, lambda: m.encode_image(x).sum()), lambda: None, reps)
    return dict(ref_step=tr, fast_step=tf, step_ratio=tr / tf, image_step=ti, step_ratio_bound=tr / ti, max_logit_diff=diff)

def bench_fast(arch, method, n_cls, reps, bs):
    "Train step of the fast path alone (for when the reference does not fit)"
    clip, m, r = models(arch, method, n_cls)
    x, y = batch(clip, n_cls, bs)
    f = step_fn(list(m.trainable().values()), loss_fn(method, m, x, y, False))
    tf, _ = alternate(f, lambda: None, reps)
    return dict(fast_step=tf)

def _mem_child(arch, method, n_cls, which, bs):
    "Peak resident memory (MB) added by one training step, measured in a fresh process"
    clip, m, r = models(arch, method, n_cls)
    x, y = batch(clip, n_cls, bs)
    ref = which == 'ref'
    report_peak(step_fn([p for _, p in pairs(method, m, r)] if ref else list(m.trainable().values()), loss_fn(method, r if ref else m, x, y, ref)))

def step_memory(arch, method, n_cls, which, bs):
    "Peak MB of one training step of `which` path, or None when it needs more than `MEM_LIMIT_GB`"
    return child_memory(__file__, arch, method, n_cls, which, bs)

def table(rows) -> str:
    "A markdown table of the results `rows`"
    def f(v, fmt): return '—' if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)
    hdr = ['CLIP', 'method', 'classes', 'reference step (s)', 'fast step (s)', 'ratio', 'bound (image tower)', 'reference MB',
           'fast MB', 'fast / reference', 'max logit diff']
    out = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    for r in rows:
        g = r.get
        out.append(f"| {r['arch']} | {r['method']} | {r['n_cls']} | {f(g('ref_step'), '{:.2f}')} | {f(g('fast_step'), '{:.2f}')} | "
                   f"{f(g('step_ratio'), '{:.1f}×')} | {f(g('step_ratio_bound'), '{:.1f}×')} | {f(g('ref_mem_mb'), '{:,.0f}')} | "
                   f"{f(g('fast_mem_mb'), '{:,.0f}')} | {f(g('mem_ratio'), '{:.3f}')} | {f(g('max_logit_diff'), '{:.1e}')} |")
    return '\n'.join(out)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--archs', nargs='+', default=['ViT-B-32', 'ViT-B-16'])
    p.add_argument('--methods', nargs='+', default=['ivlp', 'maple', 'promptsrc'], choices=list(DEFAULTS))
    p.add_argument('--classes', nargs='+', type=int, default=[100, 1000])
    p.add_argument('--bs', type=int, default=4)
    p.add_argument('--reps', type=int, default=3, help='timed repetitions of a train step (median)')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--skip-step', nargs='*', type=int, default=[], help='class counts to measure memory only')
    p.add_argument('--out', default=None, help='write the JSON results here')
    p.add_argument('--table', default=None, help='print the markdown table of this JSON results file and exit')
    p.add_argument('--mem-child', nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.table: return print(table(json.loads(Path(a.table).read_text())))
    if a.mem_child:
        arch, method, n, which, bs = a.mem_child
        return _mem_child(arch, method, int(n), which, int(bs))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, batch {a.bs}")
    rows = []
    for arch in a.archs:
        for method in a.methods:
            for n in a.classes:
                r = dict(arch=arch, method=method, n_cls=n, bs=a.bs, **DEFAULTS[method])
                if not a.skip_memory:
                    r.update(ref_mem_mb=step_memory(arch, method, n, 'ref', a.bs), fast_mem_mb=step_memory(arch, method, n, 'fast', a.bs))
                    r['mem_ratio'] = r['fast_mem_mb'] / r['ref_mem_mb'] if r['ref_mem_mb'] else None
                if n not in a.skip_step:
                    if r.get('ref_mem_mb', 0) is None: r.update(ref_step=f'does not fit in {MEM_LIMIT_GB} GB', **bench_fast(arch, method, n, a.reps, a.bs))
                    else: r.update(bench_step(arch, method, n, a.reps, a.bs))
                rows.append(r)
                print(json.dumps(r), flush=True)
    if a.out:
        with open(a.out, 'w') as f: json.dump(rows, f, indent=1)

if __name__ == '__main__': main()
