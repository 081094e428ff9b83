"""Markdown tables from the JSON that `bench_coop.py --out` writes.

Run: `python benchmarks/table.py benchmarks/results.json`
"""
import json, sys

def _s(v, fmt='{:.2f}'):
    if v is None: return '—'
    return fmt.format(v) if isinstance(v, (int, float)) else str(v)

def _x(v): return _s(v, '{:.1f}×')

def _mb(v): return _s(v, '{:,.0f}')

def epoch_table(rows):
    hdr = ['CLIP', 'train images', 'reference epoch (s)', 'fast, cold cache (s)', 'fast, warm cache (s)', 'ratio, warm', 'ratio, cold']
    out = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    for r in rows:
        out.append(f"| {r['arch']} | {r['n_train']} | {_s(r['ref_epoch'], '{:.0f}')} | {_s(r['fast_cold_epoch'], '{:.0f}')} | "
                   f"{_s(r['fast_warm_epoch'], '{:.0f}')} | {_x(r['epoch_ratio'])} | {_x(r['ref_epoch'] / r['fast_cold_epoch'])} |")
    return '\n'.join(out)

def step_table(rows):
    hdr = ['CLIP', 'classes', 'reference step (s)', 'fast step (s)', 'ratio', 'bound (image tower)', 'fast step, cached features (s)',
           'ratio, cached', 'reference eval (s)', 'fast eval (s)', 'eval ratio', 'max logit diff']
    out = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    for r in rows:
        ref = r.get('ref_step')
        out.append(f"| {r['arch']} | {r['n_cls']} | {_s(ref)} | {_s(r.get('fast_step'))} | {_x(r.get('step_ratio'))} | "
                   f"{_x(r.get('step_ratio_bound'))} | {_s(r.get('fast_cached_step'))} | {_x(r.get('cached_step_ratio'))} | "
                   f"{_s(r.get('ref_eval'), '{:.1f}')} | {_s(r.get('fast_eval'), '{:.1f}')} | {_x(r.get('eval_ratio'))} | "
                   f"{_s(r.get('max_logit_diff'), '{:.1e}')} |")
    return '\n'.join(out)

def mem_table(rows):
    hdr = ['CLIP', 'classes', 'reference (MB)', 'fast (MB)', 'fast / reference']
    out = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    for r in rows:
        ref = _mb(r['ref_mem_mb']) if r['ref_mem_mb'] is not None else f"> 14 GB (≈ {_mb(r.get('ref_mem_mb_extrapolated'))} extrapolated)"
        out.append(f"| {r['arch']} | {r['n_cls']} | {ref} | {_mb(r['fast_mem_mb'])} | {_s(r.get('mem_ratio'), '{:.3f}')} |")
    return '\n'.join(out)

def main(fname):
    rows = json.load(open(fname))
    print('### Epoch (16 shots × 100 classes, batch 32)\n\n' + epoch_table([r for r in rows if 'ref_epoch' in r]))
    print('\n### Train step (batch 32) and evaluation (5 batches of 32)\n\n' + step_table([r for r in rows if 'fast_step' in r or 'fast_eval' in r]))
    print('\n### Peak memory of one train step\n\n' + mem_table([r for r in rows if 'fast_mem_mb' in r]))

if __name__ == '__main__': main(sys.argv[1])
