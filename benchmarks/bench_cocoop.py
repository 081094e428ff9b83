"""Reference CoCoOp vs coop_fast's CoCoOp: train step and evaluation time per image, peak memory, the largest batch in 8 GB, exactness.

Run: `python benchmarks/bench_cocoop.py --out benchmarks/cocoop_results.json` (all of it; hours on 2 CPU cores), then
`python benchmarks/bench_cocoop.py --table benchmarks/cocoop_results.json` for the markdown tables; `--quick` checks that
everything runs (ViT-B/32 and RN50 at 10 classes, one repetition, memory at 5 and 10 classes: minutes).
Random-weight CLIPs at 224 px; on the CPU in fp32 unless `--device cuda --amp fp16` (what `gpu_check.sh` runs, on
ViT-B/16; memory is then not measured: the child-process probe measures the CPU process's resident size). The
straightforward path is `coop_fast.reference.RefCoCoOp`, the paper's `trainers/cocoop.py`: a Python loop over the images
of the batch, each image's C prompts padded to 77 tokens through the whole text tower. The fast path is
`coop_fast.cocoop.CoCoOpModel`: each image's prefix (SOS + its context) encoded once, the class suffixes cut after their
last EOT attending to it, in chunks of at most `--chunk-mb` MiB, checkpointed in training. Both take images (the frozen image tower runs in both, without autograd in the fast path) and share one
context ("a photo of a", 4 vectors) and one Meta-Net. Train steps are one SGD step of the paper's optimizer on a batch
of 8 (cross-entropy); times are per image, medians of alternating runs. Where the reference's step at batch 8 does not
fit in memory it is timed at the largest batch that fits (its time per image does not depend on the batch: it loops over
the images), and where not even batch 1 fits, its time per image is extrapolated linearly in the number of classes.
"""
import argparse, json, math, os, sys
import torch, torch.nn.functional as F
from coop_fast.clip import load_clip, clip_pre
from coop_fast.cocoop import CoCoOpModel
from coop_fast.reference import RefCoCoOp
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_coop
from bench_coop import classnames, timed, alternate, amp
from bench_common import MEM_LIMIT_GB, report_peak, child_memory

BS, BUDGET_GB = 8, 8  # the batch of the train step; the memory in which the largest batch is sought
DEV, AMP = 'cpu', None  # device and autocast dtype ('fp16'/'bf16'): set by --device/--amp, here and in bench_coop

def set_device(dev, amp_dtype):
    "Run on `dev` under autocast `amp_dtype`: bench_coop's `amp` autocasts, and its `timed` synchronizes, on its own globals"
    global DEV, AMP
    DEV, AMP = dev, amp_dtype
    bench_coop.DEV, bench_coop.AMP = dev, amp_dtype

def cuda(): return torch.device(DEV).type == 'cuda'

def models(arch, n_cls, chunk_mb):
    "Reference and fast CoCoOp over one random-weight CLIP, sharing context and Meta-Net"
    torch.manual_seed(0)
    clip = load_clip(arch, pretrained=None, device=DEV)
    ref = RefCoCoOp(clip, classnames(n_cls), n_ctx=4, ctx_init='a photo of a').to(DEV)  # its Meta-Net is made on the CPU
    fast = CoCoOpModel(clip, classnames(n_cls), chunk_mb=chunk_mb).to(DEV)
    src = dict(ref.named_parameters())
    with torch.no_grad():
        for n, p in fast.trainable().items(): p.copy_(src[n])
    return clip, ref, fast

def batch(clip, bs, n_cls, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = clip_pre(clip).size
    return torch.randn(bs, 3, s, s, generator=g).to(DEV), torch.randint(0, n_cls, (bs,), generator=g).to(DEV)

def params(m): return [p for p in m.parameters() if p.requires_grad]

def step_fn(model, x, y):
    "One SGD step of the paper's optimizer on the context and Meta-Net of `model`"
    opt = torch.optim.SGD(params(model), lr=2e-3, momentum=0.9, weight_decay=5e-4)
    def step():
        with amp(): loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return step

def eval_fn(model, x):
    def f():
        with torch.no_grad(), amp(): return model(x).float()
    return f

# -- memory, in fresh child processes ----------------------------------------------------------------------------------

def _mem_child(arch, n_cls, which, bs, chunk_mb, amp_dtype):
    "Peak resident memory (MB) added by one training step on the CPU, measured in a fresh process"
    set_device('cpu', None if amp_dtype == 'fp32' else amp_dtype)
    clip, ref, fast = models(arch, n_cls, chunk_mb)
    m = ref if which == 'ref' else fast
    x, y = batch(clip, bs, n_cls)
    report_peak(step_fn(m, x, y))

def step_memory(arch, n_cls, which, bs, chunk_mb):
    "Peak MB of one training step of `which` path at batch `bs`, or None when it needs more than `MEM_LIMIT_GB`"
    return child_memory(__file__, arch, n_cls, which, bs, chunk_mb, AMP or 'fp32')

def linear_fit(pts):
    "Intercept and slope of the line through the last two points `(x, y)`"
    (x0, y0), (x1, y1) = pts[-2:]
    s = (y1 - y0) / (x1 - x0)
    return y1 - s * x1, s

def bench_memory(arch, classes, chunk_mb, big_bs):
    """Peak memory of a train step at batch 8 per class count; the reference's extrapolated linearly in classes where it does
    not fit; the largest batch within `BUDGET_GB` at the largest class count (the fast path measured at batch 8 and `big_bs`)."""
    rows = {n: dict(ref_mem_mb=step_memory(arch, n, 'ref', BS, chunk_mb), fast_mem_mb=step_memory(arch, n, 'fast', BS, chunk_mb)) for n in classes}
    fit = [(n, r['ref_mem_mb']) for n, r in rows.items() if r['ref_mem_mb'] is not None]
    a, s = linear_fit(fit) if len(fit) >= 2 else (None, None)
    for n, r in rows.items():
        ref = r['ref_mem_mb']
        if ref is None and a is not None: r['ref_mem_mb_extrapolated'] = ref = a + s * n
        r['mem_ratio'] = r['fast_mem_mb'] / ref if ref else None
    n = max(classes)
    res = dict(rows=rows)
    if a is not None:  # the reference keeps every image's graph: its memory is affine in batch x classes
        per_image = s * n / BS
        res['ref_max_bs'] = max(0, math.floor((BUDGET_GB * 1024 - a) / per_image))
        res['ref_bs1_mb'] = a + per_image
    if big_bs:
        big = step_memory(arch, n, 'fast', big_bs, chunk_mb)
        res[f'fast_mem_mb_bs{big_bs}'] = big
        if big is not None:
            a_f, s_f = linear_fit([(BS, rows[n]['fast_mem_mb']), (big_bs, big)])
            res['fast_max_bs'] = math.floor((BUDGET_GB * 1024 - a_f) / s_f) if s_f > 0 else None
    return res

# -- time ----------------------------------------------------------------------------------------------------------------

REF_MB_PER_IMAGE_CLASS = 27  # the reference's train-step memory per image and class in fp32, measured on the CPU (ViT-B/32)

def ref_batch(mem, n):
    "The largest batch <= 8 at which the reference's train step fits, from the memory measurements (None: not even 1)"
    if mem is None and cuda():  # not measured on a GPU: half its free memory over the CPU's fp32 figure (autocast needs less)
        torch.cuda.empty_cache()  # the previous class count's models are gone: free what the allocator still holds
        b = min(BS, math.floor(0.5 * torch.cuda.mem_get_info()[0] / 2**20 / (REF_MB_PER_IMAGE_CLASS * n)))
        return b if b >= 1 else None
    if mem is None: return BS if n <= 10 else 1
    r = mem['rows'].get(n, {})
    if r.get('ref_mem_mb') is not None: return BS
    est = r.get('ref_mem_mb_extrapolated')
    if est is None: return 1
    per_image = est / BS
    b = min(BS, math.floor(0.8 * MEM_LIMIT_GB * 1024 / per_image))
    return b if b >= 1 else None

def bench_time(arch, n_cls, reps, chunk_mb, ref_bs, ref_eval_n):
    "Train step and evaluation time per image, fast at batch 8 and reference at `ref_bs` (None: not run), and logit difference"
    clip, ref, fast = models(arch, n_cls, chunk_mb)
    x, y = batch(clip, BS, n_cls)
    xe = x[:ref_eval_n]
    res = dict(ref_bs=ref_bs, max_logit_diff=(eval_fn(ref, xe)() - eval_fn(fast, xe)()).abs().max().item())  # before any step
    fast.train()  # the reference stays in eval mode: the paper's trainer sets only its prompt learner to training
    if ref_bs:
        xr, yr = x[:ref_bs], y[:ref_bs]
        tr, tf = alternate(step_fn(ref, xr, yr), step_fn(fast, x, y), reps)
        res.update(ref_step_per_image=tr / ref_bs, fast_step_per_image=tf / BS)
    else:
        res.update(fast_step_per_image=timed(step_fn(fast, x, y), reps) / BS)
    with amp(): feats = fast.encode_image(x)
    res['fast_cached_step_per_image'] = timed(step_fn(fast, feats, y), reps) / BS
    def image_fwd():
        with amp(): fast.encode_image(x)
    res['image_fwd_per_image'] = timed(image_fwd) / BS
    fast.eval()
    tr, tf = alternate(eval_fn(ref, xe), eval_fn(fast, x), 1, warmup=n_cls < 1000)
    res.update(ref_eval_per_image=tr / len(xe), fast_eval_per_image=tf / BS, ref_eval_images=len(xe))
    return res

def extrapolate_ref(rows, key):
    "Fill `key` (reference time per image) where it was not measured, linearly in classes from the two largest measured"
    pts = [(r['n_cls'], r[key]) for r in rows if r.get(key) is not None]
    if len(pts) < 2: return
    a, s = linear_fit(pts)
    for r in rows:
        if r.get(key) is None: r[key + '_extrapolated'] = a + s * r['n_cls']

def ratios(r):
    for k in ('step', 'eval'):
        ref = r.get(f'ref_{k}_per_image', r.get(f'ref_{k}_per_image_extrapolated'))
        r[f'{k}_ratio'] = ref / r[f'fast_{k}_per_image'] if ref else None

# -- tables --------------------------------------------------------------------------------------------------------------

def _s(v, fmt='{:.3g}'): return '—' if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)

def tables(fname):
    "Markdown tables of the results in JSON file `fname`"
    res = json.load(open(fname))
    st = res['settings']
    setting = (f"{st.get('device', 'cpu')}{f' ({g})' if (g := st.get('gpu')) else ''}, {st.get('amp') or 'fp32'}, "
               f"torch {st['torch']}, {st['threads']} threads")
    hdr = ['CLIP', 'classes', 'reference step / image (s)', 'fast step / image (s)', 'ratio', 'fast step / image, cached features (s)',
           'reference eval / image (s)', 'fast eval / image (s)', 'eval ratio', 'max logit diff']
    out = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    for r in res['time']:
        ref = (_s(r.get('ref_step_per_image')) + (f" (batch {r['ref_bs']})" if r.get('ref_bs') not in (None, BS) else '')
               if r.get('ref_step_per_image') is not None else f"≈ {_s(r.get('ref_step_per_image_extrapolated'))} (extrapolated)")
        out.append(f"| {r['arch']} | {r['n_cls']} | {ref} | {_s(r['fast_step_per_image'])} | {_s(r.get('step_ratio'), '{:.1f}×')} | "
                   f"{_s(r['fast_cached_step_per_image'])} | {_s(r['ref_eval_per_image'])} | {_s(r['fast_eval_per_image'])} | "
                   f"{_s(r.get('eval_ratio'), '{:.1f}×')} | {_s(r['max_logit_diff'], '{:.1e}')} |")
    hdr = ['CLIP', 'classes', 'reference (MB)', 'fast (MB)', 'fast / reference']
    mem = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    big = []
    for arch, m in res['memory'].items():
        for n, r in m['rows'].items():
            ref = (_s(r['ref_mem_mb'], '{:,.0f}') if r['ref_mem_mb'] is not None else
                   f"> {MEM_LIMIT_GB} GB (≈ {_s(r.get('ref_mem_mb_extrapolated'), '{:,.0f}')} extrapolated)")
            mem.append(f"| {arch} | {n} | {ref} | {_s(r['fast_mem_mb'], '{:,.0f}')} | {_s(r.get('mem_ratio'), '{:.3f}')} |")
        big.append(f"- {arch}, {max(map(int, m['rows']))} classes: reference {m.get('ref_max_bs', '—')} (batch 1 ≈ "
                   f"{_s(m.get('ref_bs1_mb'), '{:,.0f}')} MB), fast {m.get('fast_max_bs', '—')} "
                   f"(measured: {', '.join(f'{k[12:]} {v:,.0f} MB' for k, v in m.items() if k.startswith('fast_mem_mb_bs') and v)})")
    if not res['memory']: mem, big = ['Not measured (`--skip-memory`, or on the GPU).'], ['Not measured.']
    return (f'Settings: {setting}.\n\n### Train step (batch 8) and evaluation, per image\n\n' + '\n'.join(out) +
            f'\n\n### Peak memory of one train step (batch {BS})\n\n' + '\n'.join(mem) +
            f'\n\n### Largest batch whose train step fits in {BUDGET_GB} GB\n\n' + '\n'.join(big))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--archs', nargs='+', default=['ViT-B-32', 'RN50'])
    p.add_argument('--classes', nargs='+', type=int, default=[10, 100, 1000])
    p.add_argument('--reps', type=int, default=3, help='timed repetitions of a train step (median); one at 1000 classes')
    p.add_argument('--chunk-mb', type=float, default=1024., help="the fast path's memory budget per chunk (CoCoOpModel's default)")
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--mem-classes', nargs='*', type=int, default=[20, 40], help='extra class counts for memory only (to extrapolate the reference)')
    p.add_argument('--big-bs', type=int, default=32, help='second batch of the fast path at the largest class count (0: none)')
    p.add_argument('--quick', action='store_true', help='both CLIPs at 10 classes, one repetition, memory at 5 and 10 classes (fast: batch 8 and 16)')
    p.add_argument('--out', default=None, help='write the JSON results here')
    p.add_argument('--table', default=None, help='print the markdown tables of this JSON file and stop')
    p.add_argument('--device', default='cpu', help='cpu, or cuda: the GPU (memory is not measured there)')
    p.add_argument('--amp', choices=['fp16', 'bf16'], default=None, help='autocast dtype; default fp32')
    p.add_argument('--mem-child', nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.table: return print(tables(a.table))
    if a.mem_child:
        arch, n, which, bs, mb, amp_dtype = a.mem_child
        return _mem_child(arch, int(n), which, int(bs), float(mb), amp_dtype)
    set_device(a.device, a.amp)
    if cuda(): a.skip_memory = True
    if a.quick: a.classes, a.reps, a.mem_classes, a.big_bs = [10], 1, [5], 16
    settings = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpus=os.cpu_count(), device=DEV, amp=AMP,
                    gpu=torch.cuda.get_device_name() if cuda() else None, archs=a.archs, classes=a.classes,
                    reps=a.reps, chunk_mb=a.chunk_mb, batch=BS, mem_classes=a.mem_classes, big_bs=a.big_bs, quick=a.quick)
    print(json.dumps(settings), flush=True)
    res = dict(settings=settings, time=[], memory={})
    for arch in a.archs:
        mem = None if a.skip_memory else bench_memory(arch, sorted(set(a.classes) | set(a.mem_classes)), a.chunk_mb, a.big_bs)
        if mem: res['memory'][arch] = mem; print(json.dumps(dict(arch=arch, **mem)), flush=True)
        rows = []
        for n in a.classes:
            r = dict(arch=arch, n_cls=n, device=DEV, amp=AMP, **bench_time(arch, n, a.reps if n < 1000 else 1, a.chunk_mb, ref_batch(mem, n), BS if n < 1000 else 1))
            rows.append(r); print(json.dumps(r), flush=True)
        extrapolate_ref(rows, 'ref_step_per_image')
        for r in rows: ratios(r)
        res['time'] += rows
    if a.out:
        with open(a.out, 'w') as f: json.dump(res, f, indent=1)
        print(tables(a.out))

if __name__ == '__main__': main()
