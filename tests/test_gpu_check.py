"""The prepared GPU check without a GPU: it stops at once with a clear message, and its list of cuda cells that need real
weights or downloads names only cells that exist and are flagged `#| cuda`. (`benchmarks/gpu_check.sh OUT --dry-run`
runs every step on the CPU at a tiny size: a few minutes, so not here.)"""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHON': sys.executable, 'PYTHONPATH': str(ROOT)}

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_fails_fast_without_gpu(tmp_path):
    r = subprocess.run(['bash', ROOT/'benchmarks/gpu_check.sh', tmp_path/'out'], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 3 and 'no CUDA GPU is visible to PyTorch' in r.stderr and '--dry-run' in r.stderr, r.stderr
    assert not (tmp_path/'out'/'summary.md').exists()
    r = subprocess.run(['bash', ROOT/'benchmarks/gpu_check.sh'], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode != 0 and 'usage: benchmarks/gpu_check.sh OUTDIR [--dry-run]' in r.stderr

def test_cuda_cells_plan(tmp_path):
    r = subprocess.run([sys.executable, ROOT/'benchmarks/gpu_cells.py', '--out', tmp_path/'cells.json', '--dry-run'],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr  # fails when NEEDS names a cell that is no longer a cuda cell
    res = json.loads((tmp_path/'cells.json').read_text())
    nbs = res['notebooks']
    assert res['stale_needs'] == [] and nbs['02_data.ipynb']['status'] == 'would run'
    assert nbs['04_learner.ipynb']['cuda_cells_skipped'] == {'23799c15': "needs OpenAI's ViT-B/16 weights from the model hub"}
    assert nbs['04_learner.ipynb']['cuda_cells_run'] and nbs['00_clip.ipynb']['cuda_cells_run'] == []
    assert {'04b_store.ipynb', '10_distributed.ipynb'} <= {n for n, v in nbs.items() if v['status'] == 'would run'}
