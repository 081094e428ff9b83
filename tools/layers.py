"""Check coop_fast's layers: every module imports only modules of its own layer or below, without cycles, and no
module imports another's private names. Reads the package's source with `ast` (imports inside functions count too).
Exit status 1 with one line per problem; `make test` runs it."""
import argparse, ast, sys
from pathlib import Path

# Layer of each module, bottom up; `tiny.*` is the tiny CLIP's subpackage. A module missing here is an error.
LAYERS = {
    'base': 0,
    'clip': 1, 'prompt': 1, 'reference': 1, 'tiny.draw': 1, 'tiny.data': 1, 'tiny.pretrain': 1,
    'data': 2, 'datasets': 2, 'tiny.tasks': 2,
    'methods': 3, 'learner': 3, 'baselines': 3, 'export': 3, 'checkpoint': 3, 'distributed': 3, 'interpret': 3,
    'store': 3, 'tiny.eval': 3,
    'cocoop': 4, 'kg': 4, 'adapters': 4, 'heads': 4, 'heads2': 4, 'prolip': 4, 'deep': 4, 'deploy': 4,
    'experiments': 5, 'sweep': 5,
    'cli': 6, 'demo': 6, 'app': 6,
    'all': 7,
}
NAMES = ['base', 'model', 'data', 'training', 'methods', 'experiments', 'entry points', 'coop_fast.all']
SKIP = {'_modidx', '__init__', 'test_utils', 'tiny.__init__'}  # nbdev's index, the package face, and the test fixtures

def modules(pkg:Path) -> dict:
    "Dotted name (without the package) -> path of every module of `pkg`"
    return {'.'.join(p.relative_to(pkg).with_suffix('').parts): p for p in sorted(pkg.rglob('*.py'))}

def _resolve(node, name:str, pkg:str) -> list:
    "Modules of `pkg` (without the package prefix) that import `node` in module `name` names"
    if isinstance(node, ast.Import):
        return [a.name[len(pkg) + 1:] for a in node.names if a.name.startswith(pkg + '.')]
    if node.level:  # relative: from .x import y, from . import x
        base = name.split('.')[:-node.level] if node.level <= name.count('.') + 1 else []
        mod = '.'.join(base + ([node.module] if node.module else []))
    elif node.module and (node.module == pkg or node.module.startswith(pkg + '.')): mod = node.module[len(pkg) + 1:]
    else: return []
    if node.module is None or mod == '' or node.module == pkg: return [f'{mod}.{a.name}'.strip('.') for a in node.names]
    return [mod]

def imports(path:Path, name:str, pkg:str='coop_fast') -> list:
    "(imported module, [names taken], line) of each import of a `pkg` module in `path`"
    res = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            res += [(m, names, node.lineno) for m in _resolve(node, name, pkg)]
    return res

def check(pkg:Path) -> list:
    "The problems of package folder `pkg`, one line each"
    mods, problems, graph = modules(pkg), [], {}
    for name, path in mods.items():
        if name in SKIP: continue
        if name not in LAYERS:
            problems.append(f"{path}: module {name!r} has no layer in tools/layers.py LAYERS"); continue
        for dep, names, line in imports(path, name, pkg.name):
            if dep not in mods: dep = dep.rsplit('.', 1)[0]  # `from coop_fast.tiny import draw` names a module
            if dep in SKIP - {'__init__'} or dep == name: continue
            if dep not in LAYERS: continue
            graph.setdefault(name, set()).add(dep)
            if LAYERS[dep] > LAYERS[name]:
                problems.append(f"{path}:{line}: {name} ({NAMES[LAYERS[name]]}) imports {dep} ({NAMES[LAYERS[dep]]}), a layer above it")
            if private := [n for n in names if n.startswith('_') and not n.startswith('__')]:
                problems.append(f"{path}:{line}: {name} imports private name(s) {', '.join(private)} of {dep}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems

def cycles(graph:dict) -> list:
    "One path for each import cycle of `graph` (module -> modules it imports)"
    found, state = [], {}
    def visit(n, path):
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1: found.append(path[path.index(d):] + [d])
            elif d not in state: visit(d, path + [d])
        state[n] = 2
    for n in sorted(graph):
        if n not in state: visit(n, [n])
    return found

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('pkg', nargs='?', default=str(Path(__file__).resolve().parents[1]/'coop_fast'), help='package folder')
    pkg = Path(ap.parse_args().pkg)
    problems = check(pkg)
    for p in problems: print(p)
    n = len([m for m in modules(pkg) if m not in SKIP])
    print(f"{n} modules in {len(NAMES)} layers: " + ("no upward import, no cycle, no private import." if not problems
                                                      else f"{len(problems)} problem(s)."))
    sys.exit(1 if problems else 0)
