"""Sweeps on a real Slurm cluster: a single-node cluster (munged, slurmctld, slurmd from Debian's packages) started in a
temporary folder, a sweep of real training runs through submitit on it, one task cancelled mid-run and resumed by
submitting the sweep again, a failing run reported with its log. And the bash script of the local sweep."""
import contextlib, io, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
import pytest, torch
from coop_fast.checkpoint import read_checkpoint
from coop_fast.cli import main
from coop_fast.datasets import fake_dataset
from coop_fast.export import read_prompt
from coop_fast.sweep import run_sweep, sweep_script, slurm_states, wait_slurm

ROOT = Path(__file__).resolve().parents[1]
needs_slurm = pytest.mark.skipif(shutil.which('slurmctld') is None, reason="slurmctld is not installed: the Slurm tests need "
                                 "Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them)")

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def poll(cond, what, timeout=120, procs=(), every=0.1):
    "Wait until `cond()` is true; fail naming `what` on timeout or when one of `procs` (name, Popen, log) has died"
    t = time.time()
    while not cond():
        for name, p, log in procs:
            if p.poll() is not None: pytest.fail(f"{name} exited ({p.returncode}) while waiting for {what}:\n{Path(log).read_text()[-3000:]}")
        if time.time() - t > timeout: pytest.fail(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(every)

CONF = """ClusterName=coopfast
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

def mem_mb():
    "Memory of this machine in MB, as slurmd counts it, with a margin"
    kb = next(int(l.split()[1]) for l in Path('/proc/meminfo').read_text().splitlines() if l.startswith('MemTotal:'))
    return int(kb / 1024 * 0.9)

@pytest.fixture(scope='module')
def slurm():
    "A single-node Slurm cluster of this machine, its files in a temporary folder; stopped (by pid) afterwards"
    d = Path(tempfile.mkdtemp(prefix='slurm'))  # short: the munge socket's path must fit in 108 bytes
    for s in ('state', 'spool'): (d/s).mkdir()
    (d/'munge.key').write_bytes(os.urandom(1024)); (d/'munge.key').chmod(0o400)
    host = socket.gethostname().split('.')[0]
    (d/'slurm.conf').write_text(CONF.format(host=host, d=d, ctld_port=free_port(), slurmd_port=free_port(),
                                            cpus=os.cpu_count(), mem=mem_mb()))
    old = os.environ.get('SLURM_CONF')
    os.environ['SLURM_CONF'] = str(d/'slurm.conf')
    procs = []
    def start(name, *cmd):
        log = d/f'{name}.out'
        procs.append((name, subprocess.Popen(cmd, stdout=open(log, 'w'), stderr=subprocess.STDOUT), log))
    try:
        start('munged', 'munged', '-F', '-f', f'--key-file={d}/munge.key', f'--socket={d}/munge.sock', f'--pid-file={d}/munged.pid',
              f'--log-file={d}/munged.log', f'--seed-file={d}/munged.seed')
        poll(lambda: (d/'munge.sock').exists(), "munged's socket", 30, procs)
        start('slurmctld', 'slurmctld', '-D', '-f', str(d/'slurm.conf'))
        start('slurmd', 'slurmd', '-D', '-f', str(d/'slurm.conf'))
        sinfo = lambda: subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True).stdout.strip()
        poll(lambda: sinfo() == 'idle', 'the node to be idle', 60, procs)
        yield d
    finally:
        if procs:
            subprocess.run(['scancel', '-u', 'root', '--full'], capture_output=True)
            with contextlib.suppress(BaseException):
                poll(lambda: not [s for s in slurm_states().values() if s in ('RUNNING', 'PENDING', 'COMPLETING')], 'the jobs to end', 30)
        for name, p, log in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try: p.wait(15)
            except subprocess.TimeoutExpired: p.kill(); p.wait()
        if old is None: os.environ.pop('SLURM_CONF', None)
        else: os.environ['SLURM_CONF'] = old
        shutil.rmtree(d, ignore_errors=True)

ARGS = '--arch coop-test-vit --pretrained random --n_ctx 4 --bs 4 --workers 0 --device cpu --quiet --epochs 30 --lr 0.02'
SLURM = dict(gpus_per_task=0, cpus=1, mem_gb=1, time_min=10, max_parallel=2)

@needs_slurm
def test_sweep_on_slurm(slurm, tmp_path, monkeypatch):
    "Real training runs as a Slurm job array: one task cancelled after its first checkpoint, resumed by submitting the sweep again"
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # the tasks inherit the environment; two of them share this machine's CPUs
    root, out, store = tmp_path/'data', tmp_path/'runs', tmp_path/'features'
    for n in ('EuroSAT', 'DescribableTextures'): fake_dataset(n, root, n=(2, 2, 3))
    grid = dict(datasets=['EuroSAT', 'DescribableTextures'], shots=2, seeds=(1, 2), methods=['coop'], root=root, out=out,
                args=ARGS, feature_store=store)
    t0 = time.time()
    res = run_sweep(**grid, executor='slurm', wait=False, **SLURM)
    assert (len(res.pending), len(res.finished), len(res.failed)) == (4, 0, 0)
    jobs = json.loads((out/'logs/sweep.json').read_text())
    assert sorted(jobs) == sorted(f'coop/{d}_2_{s}' for d in grid['datasets'] for s in (1, 2))
    assert len({j['job_id'].split('_')[0] for j in jobs.values()}) == 1  # one job array
    # a second call while the tasks are queued or running submits nothing
    assert run_sweep(**grid, executor='slurm', wait=False, **SLURM).pending and json.loads((out/'logs/sweep.json').read_text()) == jobs
    # cancel one run after its first checkpoint
    ck = out/'coop/EuroSAT_2_1.ckpt.safetensors'
    def one_epoch():
        try: return ck.exists() and read_checkpoint(ck)[1]['epoch'] >= 1
        except ValueError: return False  # being written
    poll(one_epoch, "the first checkpoint of coop/EuroSAT_2_1", 300, every=0.01)
    victim = jobs['coop/EuroSAT_2_1']['job_id']
    subprocess.run(['scancel', victim], check=True)
    wait_slurm([j['job_id'] for j in jobs.values()], poll=0.5)
    t1 = time.time()
    done = read_checkpoint(ck)[1]['epoch']
    assert 1 <= done < 30 and not (out/'coop/EuroSAT_2_1.json').exists(), "the cancelled run finished before it was cancelled"
    res = run_sweep(**grid, executor='slurm', dry_run=True, **SLURM)
    assert sorted(res.finished) == ['coop/DescribableTextures_2_1', 'coop/DescribableTextures_2_2', 'coop/EuroSAT_2_2']
    s = res.states['coop/EuroSAT_2_1']
    assert s['state'] == 'failed' and victim in s['why'] and 'CANCELLED' in s['why'], s  # e.g. killed by SIGTERM (... CANCELLED)
    assert s['log'] == str(out/'logs/coop/EuroSAT_2_1.log') and 'coop_fast.cli train EuroSAT' in Path(s['log']).read_text()
    assert f"  failed: coop/EuroSAT_2_1: {s['why']}; log: {s['log']}" in str(res)
    # the same sweep again, from the command line: only the cancelled run is submitted, and resumes
    cmd = ['sweep', 'EuroSAT,DescribableTextures', '--root', root, '--shots', 2, '--seeds', '1,2', '--out', out,
           '--train_args', ARGS, '--feature_store', store, '--executor', 'slurm', '--gpus_per_task', 0, '--cpus', 1, '--mem', 1,
           '--time', 10, '--max_parallel', 2, '--poll', 0.5]
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se): code = main([str(a) for a in cmd])
    t2 = time.time()
    text = so.getvalue()
    assert code == 0 and text.startswith('4 runs: 4 finished, 0 failed, 0 pending\n'), text + se.getvalue()
    assert len(json.loads((out/'logs/sweep.json').read_text())) == 4 and 'coop/EuroSAT_2_2.log' not in se.getvalue()
    assert '| EuroSAT             | CoOp (M=4, end) | 2     | 2    |' in text, text
    log = (out/'logs/coop/EuroSAT_2_1.log').read_text()
    assert f"Resuming from {ck} after epoch " in log and log.count('# exit status') == 2, log
    # the resumed run ends where a straight run ends, bit for bit
    stamps = {f: f.stat().st_mtime_ns for f in store.glob('*.safetensors')}
    assert len(stamps) == 4  # the test features of each data set and CLIP (a random-weight CLIP is drawn with the run's seed)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(['train', 'EuroSAT', '--root', str(root), '--shots', '2', '--seed', '1', '--out', str(tmp_path/'straight.safetensors'),
                     '--feature_store', str(store), *ARGS.split()]) == 0
    ctx = lambda f: read_prompt(f)[0]['prompt_learner.ctx']
    assert torch.equal(ctx(out/'coop/EuroSAT_2_1.safetensors'), ctx(tmp_path/'straight.safetensors'))
    assert json.loads((out/'coop/EuroSAT_2_1.json').read_text())['accuracy'] == json.loads((tmp_path/'straight.json').read_text())['accuracy']
    assert {f: f.stat().st_mtime_ns for f in store.glob('*.safetensors')} == stamps  # the straight run read them from the store
    print(f"\nSlurm sweep: first submission {t1 - t0:.0f} s (4 tasks, one cancelled), resubmission {t2 - t1:.0f} s (1 task)")

FAKE = r'''#!/usr/bin/env bash
echo "${CUDA_VISIBLE_DEVICES:-none} $*" >> calls.txt
[ "$1" = train ] || exit 0
[ "$2" = broken ] && { echo oops; exit 1; }
while [ $# -gt 0 ]; do [ "$1" = --out ] && touch "$2"; shift; done
'''

def test_sweep_script(tmp_path):
    "The script trains each run once on its GPU, keeps going past a failed run, resumes, and gathers the results"
    b = tmp_path/'bin'; b.mkdir()
    (b/'coop-fast').write_text(FAKE); (b/'coop-fast').chmod(0o755)
    (tmp_path/'sweep.sh').write_text(sweep_script(['pets', 'broken', 'dtd'], shots=(1, 4), seeds=(1, 2), root='my data', gpus=[0, 3]))
    env = {**os.environ, 'PATH': f"{b}:{os.environ['PATH']}"}
    run = lambda: subprocess.run(['bash', 'sweep.sh'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    r = run()
    assert r.returncode == 0, r.stderr
    calls = (tmp_path/'calls.txt').read_text().splitlines()
    train = [c for c in calls if ' train ' in c]
    assert len(train) == 12 and {c.split()[0] for c in train} == {'0', '3'}
    assert "--root my data --shots 4 --seed 2 --out prompts/pets_4_2.safetensors" in ' '.join(train)
    assert calls[-1] == 'none results prompts'
    assert len(list((tmp_path/'prompts').iterdir())) == 8 and len(list((tmp_path/'logs').iterdir())) == 12
    assert sorted(l for l in r.stdout.splitlines() if l.startswith('failed')) == [
        f'failed: broken_{k}_{s} (see logs/broken_{k}_{s}.log)' for k in (1, 4) for s in (1, 2)]
    (tmp_path/'calls.txt').unlink()
    run()  # resumes: only the failed runs again
    calls = (tmp_path/'calls.txt').read_text().splitlines()
    assert len(calls) == 5 and all(' broken ' in c for c in calls[:4]) and calls[-1] == 'none results prompts'
