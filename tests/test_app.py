"""The app as a person uses it: `coop-fast serve` in a subprocess on a free localhost port, the page opened in headless
Chromium (driven over the DevTools protocol by `test_docs.Chromium`, stdlib only), an image of a known class and a file
that is not an image uploaded through the page's file field, what the page shows checked, and a screenshot saved."""
import base64, contextlib, io, json, os, select, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from test_docs import Chromium, CHROMIUM  # the project's Chromium driver (tests/test_docs.py)

pytest.importorskip('gradio', reason="the app needs Gradio (pip install 'coop_fast[app]'; a dev requirement)")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                    "--no-install-recommends chromium; .ci/run installs it)")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'GRADIO_ANALYTICS_ENABLED': 'False', 'OMP_NUM_THREADS': '1'}

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A prompt trained briefly with `coop-fast train` on coop-tiny's digits, and the task's folder"
    from coop_fast.cli import main
    from coop_fast.tiny.tasks import make_task
    d = tmp_path_factory.mktemp('app')
    task = make_task('digits', d/'tasks')
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(['train', task, '--arch', 'coop-tiny', '--shots', '4', '--epochs', '5', '--n_ctx', '4', '--out',
                     d/'digits.safetensors', '--quiet', '--workers', '0', '--device', 'cpu'])
    assert code == 0
    return d/'digits.safetensors', task

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _ready(url, proc, log, timeout=300):
    "Poll `url` until the server answers 200; fail at once if the server process exits"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: return False
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return True
        except OSError: pass
        time.sleep(0.25)  # the polling interval: readiness is what the request above observes
    pytest.fail(f"the server did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")

@pytest.fixture(scope='module')
def server(trained, tmp_path_factory):
    "`coop-fast serve PROMPT --port N` on a free port of 127.0.0.1, ready; stopped by its pid afterwards"
    prompt, _ = trained
    tmp = tmp_path_factory.mktemp('server')
    for attempt in range(3):  # another process may take the free port before the server binds it
        port, log = _free_port(), tmp/f'server{attempt}.log'
        with open(log, 'w') as f:
            proc = subprocess.Popen([sys.executable, '-m', 'coop_fast.cli', 'serve', str(prompt), '--port', str(port), '--device', 'cpu'],
                                    stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=tmp)
        try:
            if _ready(f'http://127.0.0.1:{port}/', proc, log):
                yield f'http://127.0.0.1:{port}/', log
                return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try: proc.wait(30)
                except subprocess.TimeoutExpired: proc.kill(); proc.wait()
    pytest.fail(f"the server exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")

@pytest.fixture(scope='module')
def page(server, tmp_path_factory):
    "A Chromium tab (DevTools session) for the app"
    if CHROMIUM is None: pytest.skip("Chromium is not installed")
    tmp = tmp_path_factory.mktemp('chromium')
    with open(tmp/'chromium.log', 'w') as log:
        b = Chromium(CHROMIUM, tmp/'profile', log)
        try:
            target = b('Target.createTarget', url='about:blank')['targetId']
            s = b('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
            for m in ('Page.enable', 'Runtime.enable', 'DOM.enable'): b(m, session=s)
            b('Emulation.setDeviceMetricsOverride', session=s, width=1280, height=1000, deviceScaleFactor=1, mobile=False)
            yield b, s, server[0]
        finally: b.close()

def js(b, s, expr):
    "The value of JavaScript expression `expr` in the page"
    r = b('Runtime.evaluate', session=s, expression=expr, returnByValue=True, timeout=60)
    if 'exceptionDetails' in r: raise AssertionError(f"{expr}: {r['exceptionDetails']}")
    return r['result'].get('value')

def wait_for(b, s, expr, what, timeout=180):
    "Poll `expr` in the page until it is truthy"
    deadline = time.monotonic() + timeout
    while not (v := js(b, s, expr)):
        if time.monotonic() > deadline: raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return v

_field = '#coop-files input[type=file]'
_results = """JSON.stringify([...document.querySelectorAll('#coop-results .coop-pred, #coop-results .coop-bad')].map(e =>
  ({kind: e.className, file: e.dataset.file, top: e.dataset.top || null, text: e.innerText})))"""

def load(b, s, url):
    "Open the app afresh, and wait until its file field is there"
    b.events.clear()
    b('Page.navigate', session=s, url=url)
    b.wait('Page.loadEventFired', timeout=120)
    wait_for(b, s, f"!!document.querySelector({_field!r})", 'the file field')

def upload(b, s, files):
    "Give `files` to the page's file field, as choosing them in the file dialog does; the page's results once they are shown"
    root = b('DOM.getDocument', session=s, depth=1)['root']['nodeId']
    node = b('DOM.querySelector', session=s, nodeId=root, selector=_field)['nodeId']
    b('DOM.setFileInputFiles', session=s, nodeId=node, files=[str(f) for f in files])
    return json.loads(wait_for(b, s, f"(r => r.length == {len(files)} && JSON.stringify(r))(JSON.parse({_results}))",
                               f"the results of {len(files)} file(s)"))

@needs_chromium
def test_page_shows_the_prompt(page, trained):
    "The page says what the prompt is: method, CLIP, classes, shots and accuracy from its training summary"
    from coop_fast.export import read_prompt
    b, s, url = page
    load(b, s, url)
    info = read_prompt(trained[0])[1]
    card = wait_for(b, s, "(document.querySelector('#coop-prompt') || {}).innerText", 'the prompt card')
    for want in ('CoOp (M=4, end)', 'coop-tiny', '4 shots per class', '5 epochs', 'Classes (10)', 'seven',
                 f"{100 * info['summary']['test_accuracy']:.1f}% on its test split"):
        assert want in card, (want, card)

@needs_chromium
def test_upload_image_and_non_image(page, trained, request, tmp_path_factory):
    "An uploaded image gets predict's class; a file that is not an image gets a message; the other images are still classified"
    from coop_fast.export import predict
    b, s, url = page
    prompt, task = trained
    seven, two = sorted((task/'test'/'seven').glob('*.png'))[0], sorted((task/'test'/'two').glob('*.png'))[0]
    load(b, s, url)
    (r,) = upload(b, s, [seven])
    assert r['kind'] == 'coop-pred' and r['file'] == seven.name
    assert r['top'] == predict(prompt, seven).label, r
    notes = tmp_path_factory.mktemp('upload')/'notes.txt'
    notes.write_text('a shopping list, not an image')
    load(b, s, url)
    res = upload(b, s, [two, notes, seven])
    by = {r['file']: r for r in res}
    assert by['notes.txt']['kind'] == 'coop-bad' and 'notes.txt is not an image that can be read' in by['notes.txt']['text'], res
    assert [by[f.name]['top'] for f in (two, seven)] == [predict(prompt, f).label for f in (two, seven)], res
    assert '%' in by[two.name]['text']
    h = js(b, s, 'document.documentElement.scrollHeight')
    b('Emulation.setDeviceMetricsOverride', session=s, width=1280, height=min(max(h, 1000), 4000), deviceScaleFactor=1, mobile=False)
    shot = tmp_path_factory.mktemp('screenshots')/'app.png'
    shot.write_bytes(base64.b64decode(b('Page.captureScreenshot', session=s, format='png', timeout=60)['data']))
    assert shot.stat().st_size > 5000
    request.config._app_screenshots = [*getattr(request.config, '_app_screenshots', []), str(shot)]

def test_serves_localhost_only_by_default(server):
    "The server listens on 127.0.0.1 unless told otherwise"
    url, log = server
    assert 'Running on local URL:  http://127.0.0.1:' in log.read_text(), log.read_text()

def test_says_serving_once_the_page_answers(trained, tmp_path):
    "`coop-fast serve` prints 'Serving ... on URL' only once the page answers: one request right after the line gets it"
    prompt, _ = trained
    for attempt in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        proc = subprocess.Popen([sys.executable, '-m', 'coop_fast.cli', 'serve', str(prompt), '--port', str(port), '--device', 'cpu'],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path, bufsize=0)
        try:
            out, deadline = b'', time.monotonic() + 300
            while b'(Ctrl-C stops it)' not in out:
                ready = select.select([proc.stdout], [], [], max(0., deadline - time.monotonic()))[0]
                chunk = os.read(proc.stdout.fileno(), 65536) if ready else b''
                if not chunk: break  # the server exited, or the time is up
                out += chunk
            text = out.decode(errors='replace')
            if '(Ctrl-C stops it)' in text:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=30) as r: assert r.status == 200  # no retry
                assert f'Serving {prompt.name} on http://127.0.0.1:{port}/ (Ctrl-C stops it)' in text, text
                return
            if f'Cannot serve on 127.0.0.1:{port}' not in text: pytest.fail(f"no 'Serving' line:\n{text[-3000:]}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try: proc.wait(30)
                except subprocess.TimeoutExpired: proc.kill(); proc.wait()
    pytest.fail("three free ports were taken before the server could bind them")

def test_bad_prompt_file_is_refused_before_serving(tmp_path):
    "A file that is not a prompt fails with one line, and nothing says it is served"
    from coop_fast.cli import run_cli
    (tmp_path/'bad.safetensors').write_text('not a prompt')
    code, out, err = run_cli('serve', tmp_path/'bad.safetensors', '--port', _free_port())
    assert code == 2 and 'Serving' not in out and 'bad.safetensors is not a usable coop_fast prompt file' in err, (out, err)
