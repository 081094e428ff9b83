"""The documentation site: `tools/docs.py` builds `_docs/` from every notebook in `nbs/`; the built pages
are checked as files, then served on 127.0.0.1 and opened in headless Chromium (Debian `chromium`),
driven over the DevTools protocol on a pipe (stdlib only). Screenshots go to `_docs/screenshots/`."""
import ast, base64, functools, html.parser, importlib, importlib.util, io, json, os, posixpath, re, select, shutil
import subprocess, sys, threading, time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit
import pytest

root = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('coop_docs', root/'tools'/'docs.py')
docs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(docs)

PAGES = docs.site_pages(root/'nbs')  # whatever notebooks exist now
CHROMIUM = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser'))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: "
                                    "apt-get install --no-install-recommends chromium; .ci/run installs it)")
# API that must be documented whenever its module exists (every other public name is checked too)
KEY_API = {'CoOpModel': 'prompt', 'coop_learner': 'learner'}

def _ids(p): return pytest.param(p, id=p.out)

# --- the built site, as files ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site into `_docs/` (in a subprocess, as `make docs` does)"
    dest = root/'_docs'
    r = subprocess.run([sys.executable, str(root/'tools'/'docs.py'), '--dest', str(dest), '--quiet'], cwd=root,
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, f"tools/docs.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return dest

class _Parse(html.parser.HTMLParser):
    "Links, sources, ids and the text of a page"
    def __init__(self, src):
        super().__init__(); self.urls, self.ids, self.text, self.title = [], set(), [], ''
        self._in_title = False; self.feed(src)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
        for k in ('href', 'src'):
            if a.get(k) is not None and tag != 'math': self.urls.append((tag, k, a[k]))
        self._in_title = tag == 'title'
    def handle_endtag(self, tag): self._in_title = False
    def handle_data(self, d):
        if self._in_title: self.title += d
        self.text.append(d)

def _local(url): return not urlsplit(url).scheme and not url.startswith('//')

def _target(page_out, url):
    "Site path and fragment a relative `url` on page `page_out` points to"
    u = urlsplit(url)
    path = posixpath.normpath(posixpath.join(posixpath.dirname(page_out), unquote(u.path))) if u.path else page_out
    if path.endswith('/') or path == '.': path = posixpath.join(path, 'index.html')
    return path, u.fragment

def test_one_page_per_notebook(site):
    built = json.loads((site/'pages.json').read_text())
    nbs = sorted(p.relative_to(root/'nbs').as_posix() for p in (root/'nbs').rglob('*.ipynb')
                 if not any(s.startswith(('.', '_')) for s in p.relative_to(root/'nbs').parts))
    assert sorted(b['nb'] for b in built) == nbs
    assert {b['out'] for b in built if b['nb'] == 'index.ipynb'} == {'index.html'}
    for b in built: assert (site/b['out']).is_file(), b

@pytest.mark.parametrize('page', [_ids(p) for p in PAGES])
def test_page_files(site, page):
    "Every page has its title, the sidebar of all pages, and only links and images that exist in the site"
    src = (site/page.out).read_text(encoding='utf-8')
    p = _Parse(src)
    built = {b['out']: b for b in json.loads((site/'pages.json').read_text())}
    title = built[page.out]['title']
    if page.kind in ('module', 'tutorial'):
        assert title != page.nb.stem, f"{page.nb} has no title: start it with a markdown cell '# Title'"
    assert title in p.title
    for other in built:  # the sidebar lists every page
        assert any(k == 'href' and _target(page.out, u)[0] == other for _, k, u in p.urls if _local(u)), other
    ids = {o: _Parse((site/o).read_text(encoding='utf-8')).ids for o in built}
    for tag, k, u in p.urls:
        if not _local(u) or u.startswith('#') and not u[1:]: continue
        path, frag = _target(page.out, u)
        assert (site/path).is_file(), f"{page.out}: <{tag} {k}={u!r}> points to {path}, which is not in the site"
        if frag and path in ids and not frag.startswith('_') and '._' not in frag:
            assert frag in ids[path], f"{page.out}: link {u!r}: no #{frag} on {path}"
    text = ''.join(p.text)
    assert 'Traceback (most recent call last)' not in text or 'error-expected' in src, f"{page.out} shows a traceback"

def _api_names(module):
    "Functions and classes that `coop_fast/<module>.py` defines (`def`, `class`) and exports (`__all__`)"
    mod = importlib.import_module(f'coop_fast.{module}')
    defs = {s.name for s in ast.parse(Path(mod.__file__).read_text(encoding='utf-8')).body
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return [n for n in getattr(mod, '__all__', []) if n in defs]

def _documented(name, ids): return any(i == name.lower() or i.endswith('.' + name.lower()) for i in ids)

@pytest.mark.parametrize('page', [_ids(p) for p in [p for p in PAGES if p.kind == 'module']])
def test_api_docs(site, page):
    "Each module page documents (`show_doc`) every function and class its module exports"
    ids = _Parse((site/page.out).read_text(encoding='utf-8')).ids
    missing = [n for n in _api_names(page.module) if not _documented(n, ids)]
    assert not missing, (f"{page.out} has no API docs for {missing} (exported by coop_fast/{page.module}.py from "
                         f"nbs/{page.nb}): export them in a shown cell, or add `show_doc(...)`")

@pytest.mark.parametrize('name,module', KEY_API.items())
def test_key_api_docs(site, name, module):
    if not (root/'coop_fast'/f'{module}.py').exists(): pytest.skip(f"coop_fast/{module}.py does not exist yet")
    page = next((p for p in PAGES if p.module == module), None)
    assert page, f"no notebook has `#| default_exp {module}`"
    src = (site/page.out).read_text(encoding='utf-8')
    assert _documented(name, _Parse(src).ids), f"{page.out} lacks the API docs of `{name}`"
    assert f'<h3 id="{name.lower()}">{name}</h3>' in src

def test_rendering_pieces():
    "Pandoc's heading identifiers (as in nbdev's links), Quarto link attributes and fenced divs, TeX as MathML"
    assert docs.slug('CoOpModel.text_features') == 'coopmodel.text_features'
    assert docs.slug('Few-shot DataBlocks') == 'few-shot-datablocks' and docs.slug('2 Data') == 'data'
    assert docs._unique_ids('<h2 id="a">A</h2><h3 id="a">A</h3><h2 id="a">') == '<h2 id="a">A</h2><h3 id="a-1">A</h3><h2 id="a-2">'
    h = docs.md2html('[source](x.py#L3){target="_blank"}\n\n$a_i$\n\n::: {.callout-note}\nHi\n:::')
    assert '<a href="x.py#L3" target="_blank">' in h and '<math' in h and '<div class="callout-note">' in h

def test_figures_become_files(tmp_path):
    "A plot in a cell's outputs is written next to its page and shown with a relative `<img>`"
    from PIL import Image
    buf = io.BytesIO(); Image.new('RGB', (4, 3), 'red').save(buf, 'PNG')
    out = dict(output_type='display_data', metadata={}, data={'image/png': base64.b64encode(buf.getvalue()).decode(),
                                                              'text/plain': '<Figure size 4x3>'})
    page = docs.Page(Path('sub/20_tutorial_x.ipynb'), 'sub/tutorial_x.html', 'tutorial')
    h = docs.Renderer(tmp_path).output(out, {}, page)
    assert '<img src="tutorial_x_files/fig-1.png" alt="&lt;Figure size 4x3&gt;">' in h
    assert Image.open(tmp_path/'sub'/'tutorial_x_files'/'fig-1.png').size == (4, 3)

def test_readme():
    "README (from nbs/index.ipynb) starts with the two commands, then a quick start of at most 10 lines, and a Colab badge per tutorial"
    md, cfg = (root/'README.md').read_text(encoding='utf-8'), docs._cfg()
    first = re.search(r'```(\w*)\n(.*?)```', md, re.S)
    assert first.start() < md.index('\n## ') and [l.split()[:2] for l in first.group(2).splitlines()] == [['make', 'demo'], ['make', 'test']]
    qs = re.search(r'\n## Quick start\n.*?```python\n(.*?)```', md, re.S).group(1)
    assert len(qs.strip().splitlines()) <= 10, qs
    for s in ('coop_learner(dls, n_ctx=16)', 'fit_one_cycle(', 'save_prompt(', 'predict('): assert s in qs, s
    tutorials = {'20_tutorial_fewshot', '21_tutorial_domain_shift', '22_tutorial_benchmark'} | {
        p.nb.with_suffix('').as_posix() for p in PAGES if p.kind == 'tutorial'}
    for t in sorted(tutorials):
        url = f'https://colab.research.google.com/github/{cfg.user}/{cfg.repo}/blob/{cfg.branch}/nbs/{t}.ipynb'
        assert f'[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})' in md, f"no Colab badge for {t}"

# --- the site in a browser ------------------------------------------------------------------------

class Chromium:
    "Headless Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`)"
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
             '--disable-background-networking', '--disable-component-update', '--disable-extensions',
             '--disable-dev-shm-usage', '--hide-scrollbars', '--mute-audio', '--remote-debugging-pipe',
             # nothing but the loopback server can be reached, and other names fail at once
             '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--proxy-server=direct://']

    def __init__(self, exe, profile, log):
        import fcntl
        to_r, to_w = os.pipe(); from_r, from_w = os.pipe()
        hi_r, hi_w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 20), fcntl.fcntl(from_w, fcntl.F_DUPFD, 20)
        for f in (to_r, from_w): os.close(f)
        cmd = [exe, *self.flags, f'--user-data-dir={profile}', 'about:blank']
        # the browser reads commands on fd 3 and writes answers on fd 4
        self.proc = subprocess.Popen(['bash', '-c', f'exec "$@" 3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-', 'chromium', *cmd],
                                     pass_fds=(hi_r, hi_w), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        for f in (hi_r, hi_w): os.close(f)
        self.w, self.r, self.buf, self.n, self.events = to_w, from_r, b'', 0, []

    def _recv(self, deadline):
        while b'\0' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]: raise TimeoutError('Chromium did not answer')
            chunk = os.read(self.r, 1 << 20)
            if not chunk: raise RuntimeError('Chromium closed the pipe')
            self.buf += chunk
        msg, self.buf = self.buf.split(b'\0', 1)
        return json.loads(msg)

    def __call__(self, method, session=None, timeout=30, **params):
        self.n += 1
        msg = dict(id=self.n, method=method, params=params, **({'sessionId': session} if session else {}))
        os.write(self.w, json.dumps(msg).encode() + b'\0')
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv(deadline)
            if m.get('id') == self.n:
                if 'error' in m: raise RuntimeError(f"{method}: {m['error']}")
                return m.get('result', {})
            self.events.append(m)

    def wait(self, method, timeout=30):
        deadline = time.monotonic() + timeout
        while not any(e.get('method') == method for e in self.events): self.events.append(self._recv(deadline))

    def close(self):
        try: self('Browser.close', timeout=5)
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        for f in (self.w, self.r): os.close(f)

_probe = r'''(() => {
  const keep = document.body.cloneNode(true);
  keep.querySelectorAll('.error-expected').forEach(e => e.remove());
  return JSON.stringify({
    title: document.title, h1: (document.querySelector('h1') || {}).textContent || '',
    n_nodes: document.getElementsByTagName('*').length,
    sidebar: [...document.querySelectorAll('nav.sidebar a')].map(a => a.getAttribute('href')),
    current: [...document.querySelectorAll('nav.sidebar a[aria-current=page]')].map(a => a.getAttribute('href')),
    hrefs: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    api: [...document.querySelectorAll('.output.asis h3[id], .output.asis h4[id]')].map(e => e.id),
    broken_imgs: [...document.images].filter(i => i.src.startsWith(location.origin) && !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    local_imgs: [...document.images].filter(i => i.src.startsWith(location.origin)).length,
    errors: [...keep.querySelectorAll('pre.output.error')].length,
    traceback: keep.innerText.includes('Traceback (most recent call last)'),
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
    cut: [...document.querySelectorAll('main pre')].filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.slice(0, 80)),
    event_kwargs: keep.innerText.includes('after_create'),
    no_docstring: keep.innerText.includes('Call self as a function'),
    truncated_tables: [...document.querySelectorAll('main table')].filter(t => [...t.querySelectorAll('th, td')].some(
      c => c.textContent.trim() === '...')).length,
  });
})()'''

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

@pytest.fixture(scope='module')
def browsed(site, tmp_path_factory, request):
    "Every page of the site served on 127.0.0.1 and opened in Chromium: what each page showed, and screenshots"
    if CHROMIUM is None: pytest.skip("Chromium is not installed")
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{srv.server_address[1]}/'
    shots = site/'screenshots'
    shots.mkdir(exist_ok=True)
    tmp = tmp_path_factory.mktemp('chromium')
    with open(tmp/'chromium.log', 'w') as log:
        b = Chromium(CHROMIUM, tmp/'profile', log)
        res = {}
        try:
            target = b('Target.createTarget', url='about:blank')['targetId']
            s = b('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
            for m in ('Page.enable', 'Runtime.enable', 'Log.enable', 'Network.enable'): b(m, session=s)
            for p in PAGES:
                b.events.clear()
                b('Emulation.setDeviceMetricsOverride', session=s, width=1280, height=900, deviceScaleFactor=1, mobile=False)
                nav = b('Page.navigate', session=s, url=base + p.out)
                b.wait('Page.loadEventFired')
                info = json.loads(b('Runtime.evaluate', session=s, expression=_probe, returnByValue=True)['result']['value'])
                height = min(max(info['height'], 900), 6000)  # whole page, up to 6000 px
                b('Emulation.setDeviceMetricsOverride', session=s, width=1280, height=height, deviceScaleFactor=1, mobile=False)
                png = b('Page.captureScreenshot', session=s, format='png', timeout=60)['data']
                f = shots/(p.out.replace('/', '__')[:-5] + '.png')
                f.write_bytes(base64.b64decode(png))
                ev = [e for e in b.events if e.get('sessionId') == s]
                info.update(shot=f, nav_error=nav.get('errorText'), status=[
                    (e['params']['response']['url'], e['params']['response']['status']) for e in ev
                    if e.get('method') == 'Network.responseReceived' and e['params']['response']['url'].startswith(base)],
                    failed=[e['params'].get('errorText') + ' ' + e['params'].get('requestId', '') for e in ev
                            if e.get('method') == 'Network.loadingFailed' and e['params'].get('type') != 'Other'],
                    exceptions=[e['params']['exceptionDetails'].get('text', '') + str(e['params']['exceptionDetails'].get('exception', {}).get('description', ''))
                                for e in ev if e.get('method') == 'Runtime.exceptionThrown'],
                    console=[e['params']['entry']['text'] + ' ' + e['params']['entry'].get('url', '') for e in ev
                             if e.get('method') == 'Log.entryAdded' and e['params']['entry']['level'] == 'error'])
                res[p.out] = info
        finally:
            b.close(); srv.shutdown(); srv.server_close()
    request.config._docs_screenshots = sorted(str(i['shot'].relative_to(root)) for i in res.values())
    return base, res, site

@needs_chromium
@pytest.mark.parametrize('page', [_ids(p) for p in PAGES])
def test_page_in_browser(browsed, page):
    "The page loads from the server without errors, shows its title and the sidebar, and all its local links resolve"
    base, res, site = browsed
    i = res[page.out]
    assert not i['nav_error'], i['nav_error']
    assert all(st < 400 for _, st in i['status']), [s for s in i['status'] if s[1] >= 400]
    local_console = [c for c in i['console'] if base in c or '127.0.0.1' in c]
    assert not i['exceptions'] and not local_console, (i['exceptions'], local_console)
    assert i['n_nodes'] > 30 and i['h1'].strip() and i['h1'].strip() in i['title']
    assert len(i['sidebar']) >= len(PAGES) + 1 and len(i['current']) == 1
    assert len(set(i['ids'])) == len(i['ids']), f"{page.out}: repeated ids"
    assert not i['broken_imgs'], f"images that did not load: {i['broken_imgs']}"
    assert i['errors'] == 0 and not i['traceback'], f"{page.out} shows a Python error"
    assert not i['cut'], f"{page.out}: code wider than the column, cut: {i['cut'][:3]}"
    assert not i['event_kwargs'], f"{page.out} shows fastai's event keyword arguments in a callback's signature"
    assert not i['no_docstring'], f"{page.out} shows 'Call self as a function.': a function without a docstring"
    assert not i['truncated_tables'], f"{page.out} shows a table cut by pandas ('...' columns or rows)"
    for url in i['hrefs']:
        if not url.startswith(base): continue
        path, frag = _target('', url[len(base):])
        assert path in res or (site/path).is_file(), f"{page.out}: broken link {url}"
        if frag and path in res and not frag.startswith('_') and '._' not in frag:
            assert frag in res[path]['ids'], f"{page.out}: link {url}: no #{frag} on {path}"
    assert i['shot'].stat().st_size > 5000

@needs_chromium
def test_api_in_browser(browsed):
    "The browser shows the API docs of the key names, and of every exported function and class"
    _, res, _ = browsed
    for p in PAGES:
        if p.kind != 'module': continue
        missing = [n for n in _api_names(p.module) if not _documented(n, res[p.out]['api'])]
        assert not missing, f"{p.out}: no API docs shown for {missing}"
    for name, module in KEY_API.items():
        p = next((p for p in PAGES if p.module == module), None)
        if (root/'coop_fast'/f'{module}.py').exists(): assert p and name.lower() in res[p.out]['api'], name
