"tools/layers.py finds upward imports, cycles and private imports, and the package has none."
import importlib.util, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('coop_layers', root/'tools'/'layers.py')
layers = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(layers)

def _pkg(tmp_path, files):
    pkg = tmp_path/'coop_fast'
    for name, src in files.items():
        f = pkg/(name.replace('.', '/') + '.py'); f.parent.mkdir(parents=True, exist_ok=True); f.write_text(src)
    return pkg

def test_finds_each_kind_of_problem(tmp_path):
    pkg = _pkg(tmp_path, {
        'base': 'import os\n',
        'prompt': 'from .learner import x\n',  # model imports training: upward
        'learner': 'from .prompt import _hidden\nfrom coop_fast import base\n',  # a private name
        'cocoop': 'def f():\n    from coop_fast.kg import y\n',  # lazy imports count
        'kg': 'from .cocoop import z\n',  # cocoop <-> kg: a cycle within one layer
        'newthing': 'import coop_fast.base\n',  # no layer
    })
    probs = layers.check(pkg)
    assert any('prompt (model) imports learner (training), a layer above it' in p for p in probs), probs
    assert any('learner imports private name(s) _hidden of prompt' in p for p in probs), probs
    assert any(p.startswith('import cycle: cocoop -> kg -> cocoop') for p in probs), probs
    assert any("module 'newthing' has no layer" in p for p in probs), probs
    assert len(probs) == 5, probs  # the cycle prompt -> learner -> prompt too

def test_clean_package_passes(tmp_path):
    pkg = _pkg(tmp_path, {'base': 'import os\n', 'prompt': 'from .base import check_int\n',
                          'learner': 'from coop_fast.prompt import PromptModel\nfrom . import base\n'})
    assert layers.check(pkg) == []

def test_coop_fast_layers():
    r = subprocess.run([sys.executable, str(root/'tools'/'layers.py')], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
