"Shared test settings: nothing may reach a model or data hub, and every test starts from the same seed."
import os
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'
import atexit, shutil, tempfile
if 'COOP_FAST_FEATURE_STORE' not in os.environ:  # the CLI's feature store: a folder of this test run, not the user's cache
    os.environ['COOP_FAST_FEATURE_STORE'] = tempfile.mkdtemp(prefix='coop_fast_features_')
    atexit.register(shutil.rmtree, os.environ['COOP_FAST_FEATURE_STORE'], True)
import pytest
from coop_fast.test_utils import seed_all

@pytest.fixture(autouse=True)
def _seeded():
    "Seed Python, NumPy and torch before each test (`COOP_FAST_TEST_SEED`, default 0): the same draws on every run"
    seed_all()

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    "List the screenshots the browser tests saved"
    shots = getattr(config, '_docs_screenshots', None)
    if shots: terminalreporter.write_line(f"docs screenshots ({len(shots)}): " + ' '.join(shots))
    app = getattr(config, '_app_screenshots', None)  # tests/test_app.py
    if app: terminalreporter.write_line(f"app screenshots ({len(app)}): " + ' '.join(app))
