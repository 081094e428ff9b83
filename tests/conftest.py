"Shared test settings: nothing may reach a model or data hub."
import os
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    "List the screenshots the documentation browser test saved"
    shots = getattr(config, '_docs_screenshots', None)
    if shots: terminalreporter.write_line(f"docs screenshots ({len(shots)}): " + ' '.join(shots))
