"Write README.md from nbs/index.ipynb (what `nbdev_readme` does, without Quarto)."
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
_dir = re.compile(r'^\s*#\|\s*(.*)$')

def directives(src):
    "Cell directives (`#| hide`, `#| echo: false`, ...) and the source without them"
    lines = src.splitlines()
    ds = [m.group(1).strip() for l in lines if (m := _dir.match(l))]
    return ds, '\n'.join(l for l in lines if not _dir.match(l)).strip()

def outputs(cell):
    "Plain-text outputs of a code cell"
    res = []
    for o in cell.get('outputs', []):
        txt = o.get('text') or o.get('data', {}).get('text/markdown') or o.get('data', {}).get('text/plain')
        if txt: res.append(''.join(txt).rstrip())
    return res

def nb2md(nb):
    "Markdown for notebook `nb`: markdown cells as they are, shown code cells fenced, with text outputs"
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': parts.append(src.strip()); continue
        if c['cell_type'] != 'code': continue
        ds, code = directives(src)
        if 'hide' in ds or any(d.startswith('export') for d in ds): continue
        if code and 'echo: false' not in ds: parts.append(f'```python\n{code}\n```')
        parts += [f'```\n{o}\n```' for o in outputs(c)]
    return '\n\n'.join(p for p in parts if p) + '\n'

if __name__ == '__main__':
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    out = root/'README.md'
    md = '<!-- Written by tools/readme.py from nbs/index.ipynb: edit the notebook, not this file. -->\n\n' + nb2md(nb)
    if not out.exists() or out.read_text() != md: out.write_text(md)
