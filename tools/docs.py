"""Build the documentation site in `_docs/` from the notebooks in `nbs/`, with registry packages only.

`make docs` runs `nbdev_docs` when Quarto is installed and this otherwise. Both start from nbdev's own
notebook processors (`nbdev.processors.FilterDefaults`: front matter, automatic `show_doc` after
exported definitions, hidden and exported cells removed, backticked names linked). Here `show_doc`
cells are rendered from the exported modules instead of executing the notebook's import cells
(`exec_show_docs`, which runs whole test cells: minutes, not seconds). Cells show the outputs stored in
the notebook; `--execute` runs notebooks that have none first, skipping the `tst_flags` cells as
`nbdev_test` does. Markdown is rendered with markdown-it-py, code with Pygments, TeX with latex2mathml
(MathML: no script, no network).

    python tools/docs.py [--dest _docs] [--execute]
"""
import argparse, ast, base64, html, inspect, json, os, posixpath, re, shutil
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

root = Path(__file__).resolve().parent.parent

@dataclass
class Page:
    "One page of the site, from notebook `nb` (a path relative to the notebooks folder)"
    nb: Path        # notebook path, relative to `nbs_path`
    out: str        # page path in the site, e.g. 'prompt.html'
    kind: str       # 'home', 'module', 'tutorial' or 'page'
    title: str = ''
    description: str = ''
    module: str = ''  # `default_exp` of the notebook, if any
    html: str = field(default='', repr=False)

_re_default_exp = re.compile(r'^\s*#\|\s*default_exp\s+(\S+)', re.MULTILINE)

def _cfg():
    from nbdev.config import get_config
    return get_config(path=root)

def _kind(nb:Path, module):
    if nb.stem == 'index' and nb.parent == Path('.'): return 'home'
    if 'tutorial' in nb.stem: return 'tutorial'
    return 'module' if module else 'page'

def site_pages(nbs_path=None):
    "A `Page` for every notebook in `nbs_path` that nbdev would render, in file-name order"
    from fastcore.xtras import working_directory
    from nbdev.doclinks import nbglob, _nbpath2html
    nbs_path = Path(nbs_path or _cfg().nbs_path)
    with working_directory(root): nbs = nbglob(nbs_path, func=Path)  # nbdev reads settings.ini from the cwd
    res = []
    for p in sorted(nbs, key=lambda p: p.relative_to(nbs_path).as_posix()):
        rel = p.relative_to(nbs_path)
        nb = json.loads(p.read_text(encoding='utf-8'))
        srcs = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
        m = next((m for s in srcs if (m := _re_default_exp.search(s))), None)
        module = m.group(1) if m else ''
        res.append(Page(rel, _nbpath2html(rel).as_posix(), _kind(rel, module), module=module))
    return res

# --- notebook processing (nbdev's processors) ---------------------------------------------------

def _show_doc_md(expr, ns, where):
    "Markdown of `show_doc` call `expr`, evaluated in `ns`"
    try: res = eval(compile(ast.Expression(expr), where, 'eval'), ns)
    except Exception as e:
        raise RuntimeError(f"{where}: `{ast.unparse(expr)}` failed: {type(e).__name__}: {e}") from None
    if res is None: return ''
    md = res._repr_markdown_()
    try:
        obj = eval(compile(ast.Expression(expr.args[0]), where, 'eval'), ns)
        line = inspect.getsourcelines(inspect.unwrap(obj))[1]
        md = md.replace('#LNone)', f'#L{line})')
    except Exception: md = md.replace('#LNone)', ')')
    return md

def _hide_event_kwargs():
    "Show fastai callbacks without the event keyword arguments fastai's `funcs_kwargs` gives every `Callback.__init__`"
    try: from fastai.callback.core import Callback
    except ImportError: return
    events, init = set(getattr(Callback, '_methods', ())), Callback.__init__  # every subclass without an `__init__` shares it
    sig = inspect.signature(init)
    init.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name not in events])

def _render_show_docs_proc():
    from nbdev.process import Processor
    from nbdev.processors import _is_showdoc
    from nbdev.showdoc import show_doc
    from fastcore.basics import str2bool

    class render_show_docs(Processor):
        "Fill `show_doc` cells with their markdown, looking names up in the exported module and the notebook's imports"
        def begin(self): self.ns = None

        def _namespace(self):
            ns = {}
            exp = next((m.group(1) for c in self.nb.cells if c.cell_type == 'code'
                        and (m := _re_default_exp.search(c.source))), None)
            if exp: ns.update(vars(import_module(f"{_cfg().lib_name}.{exp}")))
            for c in self.nb.cells:  # cells holding only imports: cheap, and they name what `show_doc` shows
                if c.cell_type != 'code': continue
                try: tree = ast.parse(c.source)
                except SyntaxError: continue
                if tree.body and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body):
                    try: exec(compile(tree, str(self.nb.path_), 'exec'), ns)
                    except Exception as e: raise RuntimeError(f"{self.nb.path_}: import cell failed: {e}") from None
            ns['show_doc'] = show_doc
            _hide_event_kwargs()
            return ns

        def cell(self, cell):
            if not _is_showdoc(cell): return
            if str2bool(getattr(self.nb, 'frontmatter_', {}).get('skip_showdoc', False)): return
            if self.ns is None: self.ns = self._namespace()
            where = f"{Path(self.nb.path_).name}, cell {cell.idx_}"
            code = '\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith('#|'))
            mds = []
            for s in ast.parse(code).body:
                if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and getattr(s.value.func, 'id', '') == 'show_doc':
                    mds.append(_show_doc_md(s.value, self.ns, where))
                else: exec(compile(ast.Module([s], []), where, 'exec'), self.ns)
            cell.outputs = [dict(output_type='execute_result', execution_count=None, metadata={},
                                 data={'text/markdown': '\n\n'.join(mds), 'text/plain': ''})]
    return render_show_docs

def process_nb(path, execute=False):
    "Notebook `path` after nbdev's docs processors, with `show_doc` outputs filled in"
    from execnb.nbio import read_nb
    from nbdev.processors import FilterDefaults, exec_show_docs
    from nbdev.process import NBProcessor
    nb = read_nb(path)
    if execute and not any(c.get('outputs') for c in nb.cells): run_nb(nb, path)
    procs = [_render_show_docs_proc() if p is exec_show_docs else p for p in FilterDefaults().procs()]
    NBProcessor(nb=nb, procs=procs).process()
    return nb

def run_nb(nb, path):
    "Execute `nb` in place (read from `path`), skipping cells flagged with `tst_flags`, as `nbdev_test` does"
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import extract_directives
    flags = set(_cfg().get('tst_flags', '').split())
    def _skip(cell):
        if cell.cell_type != 'code': return True
        d = extract_directives(cell, remove=False)
        return bool(flags & d.keys()) or d.get('eval:', [''])[0].lower() == 'false'
    with working_directory(Path(path).parent):
        CaptureShell(path).run_all(nb, exc_stop=True, preproc=_skip)

# --- markdown and cells to HTML -------------------------------------------------------------------

def slug(s):
    "Pandoc's (and so Quarto's and nbdev's) identifier for heading text `s`"
    s = re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', s.strip(), flags=re.UNICODE).lower())
    return re.sub(r'^[^a-z]+', '', s) or 'section'

def _math(tex, opts):
    from latex2mathml.converter import convert
    try: return convert(tex, display='block' if opts.get('display_mode') else 'inline')
    except Exception: return f'<code class="math">{html.escape(tex)}</code>'

def highlight(code, lang='python'):
    "Pygments HTML for `code` (plain, escaped text when `lang` is unknown)"
    from pygments import highlight as _hl
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound
    try: lexer = get_lexer_by_name(lang or 'text')
    except ClassNotFound: return html.escape(code)
    return _hl(code, lexer, HtmlFormatter(nowrap=True))

def _md():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.anchors import anchors_plugin
    from mdit_py_plugins.attrs import attrs_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    md = MarkdownIt('commonmark', {'html': True, 'highlight': lambda code, lang, attrs: highlight(code, lang)})
    md.enable(['table', 'strikethrough'])
    md.use(dollarmath_plugin, renderer=_math, double_inline=True).use(attrs_plugin)
    md.use(anchors_plugin, min_level=1, max_level=4, slug_func=slug)
    return md

_re_fdiv = re.compile(r'^:::+\s*(\{[^}]*\})?\s*$', re.MULTILINE)

def _fenced_divs(src):
    "Quarto fenced divs (`::: {.callout-note}` ... `:::`) as HTML divs"
    def _div(m):
        if not m.group(1): return '\n</div>\n'
        classes = ' '.join(c[1:] for c in m.group(1)[1:-1].split() if c.startswith('.'))
        return f'\n<div class="{html.escape(classes)}">\n'
    return _re_fdiv.sub(_div, src)

def md2html(src, md=None):
    "HTML of markdown `src` (CommonMark, tables, TeX math, Quarto link attributes and fenced divs)"
    return (md or _md()).render(_fenced_divs(src))

_re_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_re_qdir = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def _quarto_opts(src):
    "Quarto cell options left in `src` by nbdev (`#| echo: false`, ...) and the code without them"
    opts, code = {}, []
    lines = src.splitlines()
    for i, l in enumerate(lines):
        m = _re_qdir.match(l)
        if not m: code = lines[i:]; break
        opts[m.group(1)] = m.group(2).strip('"\'')
    return opts, '\n'.join(code).strip('\n')

def _false(v): return str(v).lower() in ('false', 'no', '0')

class Renderer:
    "Render processed notebooks to HTML pages of the site in `dest`"
    _mime_order = ('image/svg+xml', 'image/png', 'image/jpeg', 'image/gif', 'text/html', 'text/markdown', 'text/latex', 'text/plain')

    def __init__(self, dest):
        self.dest, self.md, self.n_img = Path(dest), _md(), 0

    def output(self, o, opts, page):
        t = o.get('output_type')
        if t == 'stream':
            cls = 'stderr' if o.get('name') == 'stderr' else 'stdout'
            return f'<pre class="output stream {cls}">{html.escape(_re_ansi.sub("", "".join(o.get("text", ""))))}</pre>'
        if t == 'error':
            tb = _re_ansi.sub('', '\n'.join(o.get('traceback') or [f"{o.get('ename')}: {o.get('evalue')}"]))
            ok = ' error-expected' if not _false(opts.get('error', 'false')) else ''
            return f'<pre class="output error{ok}">{html.escape(tb)}</pre>'
        data = o.get('data', {})
        def _s(k): v = data[k]; return ''.join(v) if isinstance(v, list) else str(v)
        mime = next((m for m in self._mime_order if m in data and _s(m).strip()), None)
        if mime is None: return ''
        if opts.get('output') == 'asis' and 'text/markdown' in data:
            return f'<div class="output asis">{md2html(_s("text/markdown"), self.md)}</div>'
        if mime.startswith('image/'):
            ext = {'image/svg+xml': 'svg', 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif'}[mime]
            self.n_img += 1
            rel = f"{Path(page.out).with_suffix('').as_posix()}_files/fig-{self.n_img}.{ext}"
            f = self.dest/rel
            f.parent.mkdir(parents=True, exist_ok=True)
            if ext == 'svg': f.write_text(_s(mime), encoding='utf-8')
            else: f.write_bytes(base64.b64decode(_s(mime)))
            alt = html.escape(_s('text/plain')[:200]) if 'text/plain' in data else 'figure'
            src = posixpath.relpath(rel, posixpath.dirname(page.out) or '.')
            return f'<div class="output figure"><img src="{src}" alt="{alt}"></div>'
        if mime == 'text/html': return f'<div class="output html">{_s(mime)}</div>'
        if mime == 'text/markdown': return f'<div class="output markdown">{md2html(_s(mime), self.md)}</div>'
        if mime == 'text/latex': return f'<div class="output latex">{md2html(_s(mime), self.md)}</div>'
        return f'<pre class="output text">{html.escape(_re_ansi.sub("", _s(mime)))}</pre>'

    def cell(self, c, page, lang='python'):
        if c.cell_type == 'markdown': return md2html(c.source, self.md)
        if c.cell_type == 'raw': return ''
        opts, code = _quarto_opts(c.source)
        if _false(opts.get('include', 'true')): return ''
        parts = []
        if code and not _false(opts.get('echo', 'true')):
            lg = c.metadata.get('language', lang) if hasattr(c, 'metadata') else lang
            pre = f'<pre class="sourceCode"><code class="language-{lg}">{highlight(code, lg)}</code></pre>'
            fold = opts.get('code-fold')
            if fold and not _false(fold):
                summary = html.escape(opts.get('code-summary', 'Code'))
                pre = f'<details class="code-fold"{" open" if fold == "show" else ""}><summary>{summary}</summary>{pre}</details>'
            parts.append(pre)
        if not _false(opts.get('output', 'true')):
            parts += [o for o in (self.output(o, opts, page) for o in c.get('outputs', [])) if o]
        return f'<div class="cell">{"".join(parts)}</div>' if parts else ''

    def page(self, nb, page):
        fm = getattr(nb, 'frontmatter_', {}) or {}
        page.title = str(fm.get('title') or page.nb.stem)
        page.description = str(fm.get('description') or '')
        self.n_img = 0
        page.html = _unique_ids('\n'.join(h for h in (self.cell(c, page) for c in nb.cells) if h))
        return page

def _unique_ids(body):
    "Heading identifiers made unique over the whole page (cells are rendered one by one), as pandoc does: `x`, `x-1`, ..."
    seen = {}
    def _sub(m):
        i = m.group(2); n = seen.get(i, 0); seen[i] = n + 1
        return m.group(0) if not n else f'{m.group(1)}{i}-{n}"'
    return re.sub(r'(<h[1-6] id=")([^"]+)"', _sub, body)

# --- the site -------------------------------------------------------------------------------------

_sections = (('home', None), ('module', 'API reference'), ('tutorial', 'Tutorials'), ('page', 'More'))

_re_url = re.compile(r'\b(href|src)="([^"]*)"')

def _fix_links(body, page, pages, site_url):
    "Links to the published site, to notebooks and to pages, made relative to `page`"
    by_nb = {p.nb.as_posix(): p.out for p in pages}
    here = posixpath.dirname(page.out)
    def _rel(target): return posixpath.relpath(target, here or '.')
    def _sub(m):
        attr, url = m.group(1), html.unescape(m.group(2))
        if site_url and url.startswith(site_url):
            url = url[len(site_url):].lstrip('/')
            path, _, frag = url.partition('#')
            url = _rel(path or 'index.html') + (f'#{frag}' if frag else '')
        elif not re.match(r'^([a-z][a-z0-9+.-]*:|#|/)', url):
            path, _, frag = url.partition('#')
            if path.endswith('.ipynb'):
                nb = posixpath.normpath(posixpath.join(posixpath.dirname(page.nb.as_posix()), path))
                if nb in by_nb: url = _rel(by_nb[nb]) + (f'#{frag}' if frag else '')
        return f'{attr}="{html.escape(url)}"'
    return _re_url.sub(_sub, body)

def _toc(body):
    "In-page contents from the h2/h3 headings of `body`"
    hs = re.findall(r'<h([23]) id="([^"]+)"[^>]*>(.*?)</h\1>', body, re.S)
    if not hs: return ''
    items = ''.join(f'<li class="toc-h{lvl}"><a href="#{i}">{re.sub(r"<[^>]+>", "", t)}</a></li>' for lvl, i, t in hs)
    return f'<nav class="toc" aria-label="On this page"><h2>On this page</h2><ul>{items}</ul></nav>'

def _sidebar(page, pages, title):
    here = posixpath.dirname(page.out) or '.'
    home = next((p for p in pages if p.kind == 'home'), None)
    res = [f'<a class="site-title" href="{posixpath.relpath(home.out if home else "index.html", here)}">{html.escape(title)}</a>']
    for kind, name in _sections:
        ps = [p for p in pages if p.kind == kind]
        if not ps: continue
        if name: res.append(f'<h2>{name}</h2>')
        items = ''.join(f'<li><a href="{posixpath.relpath(p.out, here)}"' + (' aria-current="page"' if p is page else '')
                        + f'>{html.escape("Home" if p.kind == "home" and p.title == title else p.title)}</a></li>' for p in ps)
        res.append(f'<ul>{items}</ul>')
    return '<nav class="sidebar" aria-label="Pages">' + ''.join(res) + '</nav>'

_template = '''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="coop_fast tools/docs.py">
<title>{title}</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" href="data:,">
</head>
<body class="page-{kind}">
{sidebar}
<main id="content">
<header class="page-header">
<h1 class="title">{h1}</h1>
{description}{colab}
</header>
{body}
</main>
{toc}
</body>
</html>
'''

def _page_html(page, pages, cfg, site_url):
    here = posixpath.dirname(page.out) or '.'
    body = _fix_links(page.html, page, pages, site_url)
    desc = f'<div class="description">{md2html(page.description)}</div>' if page.description else ''
    colab = ''
    if page.kind == 'tutorial':
        url = f"https://colab.research.google.com/github/{cfg.user}/{cfg.repo}/blob/{cfg.branch}/{cfg.nbs_path.name}/{page.nb.as_posix()}"
        colab = f'<p class="colab"><a href="{url}">Open in Colab</a></p>'
    title = page.title if page.kind == 'home' else f'{page.title} – {cfg.title}'
    return _template.format(title=html.escape(title), css=posixpath.relpath('styles.css', here), kind=page.kind,
                            sidebar=_sidebar(page, pages, cfg.title), h1=html.escape(page.title),
                            description=_fix_links(desc, page, pages, site_url), colab=colab,
                            body=body, toc=_toc(body))

_css = '''
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg2:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.6 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; color:var(--fg);
       display:grid; grid-template-columns:15rem minmax(0,1fr) 14rem; gap:2rem; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
.sidebar { position:sticky; top:0; height:100vh; overflow:auto; padding:1.5rem 1rem; background:var(--bg2); border-right:1px solid var(--line); }
.sidebar .site-title { font-weight:700; font-size:1.2rem; color:var(--fg); }
.sidebar h2 { font-size:.8rem; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:1.5rem 0 .3rem; }
.sidebar ul, .toc ul { list-style:none; margin:0; padding:0; }
.sidebar li a { display:block; padding:.15rem .5rem; border-radius:4px; color:var(--fg); }
.sidebar li a[aria-current=page] { background:#ddf4ff; color:var(--accent); font-weight:600; }
main { padding:1.5rem 0 4rem; min-width:0; max-width:56rem; }
.toc { position:sticky; top:0; align-self:start; padding:1.5rem 1rem 0 0; font-size:.85rem; max-height:100vh; overflow:auto; }
.toc h2 { font-size:.8rem; text-transform:uppercase; color:var(--muted); margin:0 0 .3rem; }
.toc .toc-h3 { padding-left:.8rem; }
.page-header { border-bottom:1px solid var(--line); margin-bottom:1.5rem; }
.page-header h1 { margin:.2rem 0 .5rem; font-size:2.2rem; }
.description { color:var(--muted); font-size:1.1rem; }
.colab a { display:inline-block; padding:.2rem .7rem; border:1px solid var(--line); border-radius:4px; background:var(--bg2); }
h2 { border-bottom:1px solid var(--line); padding-bottom:.2rem; margin-top:2rem; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:.88em; }
:not(pre) > code { background:var(--bg2); padding:.1em .3em; border-radius:4px; }
pre { background:var(--bg2); padding:.8rem 1rem; border-radius:6px; overflow:auto; line-height:1.45; margin:.5rem 0;
      white-space:pre-wrap; overflow-wrap:anywhere; }  /* long lines wrap inside the column, never cut */
pre.output { background:#fff; border:1px solid var(--line); }
pre.output.stderr { background:#fff8f0; } pre.output.error { background:#fff0f0; border-color:#f5a3a3; }
.cell { margin:1rem 0; }
.output.asis { border:1px solid var(--line); border-radius:6px; padding:.2rem 1rem .6rem; box-shadow:0 1px 2px rgba(0,0,0,.05); }
.output.asis hr { display:none; }
.output.figure img, main img { max-width:100%; height:auto; }
.output.html { overflow:auto; }
table { border-collapse:collapse; margin:.8rem 0; font-size:.9rem; }
th, td { border:1px solid var(--line); padding:.3rem .6rem; text-align:left; }
th { background:var(--bg2); }
blockquote { margin:1rem 0; padding:.2rem 1rem; border-left:4px solid var(--line); color:var(--muted); }
details.code-fold summary { cursor:pointer; color:var(--muted); font-size:.9rem; }
.callout-note, .callout-tip, .callout-warning, .callout-important, .callout-caution { border-left:4px solid var(--accent); background:var(--bg2); padding:.3rem 1rem; margin:1rem 0; border-radius:4px; }
.callout-warning, .callout-caution, .callout-important { border-color:#d4a72c; background:#fff8c5; }
math[display=block] { margin:.8rem 0; overflow-x:auto; }
@media (max-width: 72rem) { body { grid-template-columns:13rem minmax(0,1fr); } .toc { display:none; } }
@media (max-width: 48rem) { body { display:block; } .sidebar { position:static; height:auto; } main { padding:1rem; } }
'''

def build(dest=None, execute=False, quiet=False):
    "Build the site in `dest` (default: settings.ini `doc_path`) from every notebook; returns its `Page`s"
    from fastcore.xtras import working_directory
    from pygments.formatters import HtmlFormatter
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    with working_directory(root):
        cfg = _cfg()
        dest, nbs_path = Path(dest or cfg.doc_path), Path(cfg.nbs_path)
        site_url = (cfg.get('doc_host', '').rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/')).rstrip('/') + '/'
        pages = site_pages(nbs_path)
        if dest.exists(): shutil.rmtree(dest)
        dest.mkdir(parents=True)
        r = Renderer(dest)
        for p in pages:
            if not quiet: print(f'docs: {p.nb} -> {p.out}', flush=True)
            r.page(process_nb(nbs_path/p.nb, execute=execute), p)
        for p in pages:
            f = dest/p.out
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(_page_html(p, pages, cfg, site_url), encoding='utf-8')
        (dest/'styles.css').write_text(_css + HtmlFormatter().get_style_defs('pre'), encoding='utf-8')
        (dest/'.nojekyll').touch()
        (dest/'pages.json').write_text(json.dumps([dict(nb=p.nb.as_posix(), out=p.out, kind=p.kind, title=p.title,
                                                        module=p.module) for p in pages], indent=1))
    if not quiet: print(f'docs: {len(pages)} pages in {dest}/, open {dest}/index.html')
    return pages

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dest', default=None, help="output folder (default: settings.ini `doc_path`, `_docs`)")
    ap.add_argument('--execute', action='store_true', help="run notebooks that have no stored outputs first")
    ap.add_argument('--quiet', action='store_true')
    a = ap.parse_args()
    build(a.dest, execute=a.execute, quiet=a.quiet)
