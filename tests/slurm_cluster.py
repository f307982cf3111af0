"""A real one-node SLURM (22.05, with accounting) for the tests, started from generated configs.

Not a test file: tests/conftest.py's `slurm_partition` fixture calls `start` and the session's end calls
`stop`. The daemons run in the foreground as children of the process that started them, each from a config
in a private state folder (STATE, /tmp/mini-slurm by default), on private ports so they never meet a lab's
own SLURM: munged (as the munge user; Debian's package made its key), MariaDB (a fresh data folder per
start), slurmdbd, `slurmctld -D -i` and `slurmd -D`. SLURM's commands (sbatch, sacct, squeue: what submitit
calls) find this cluster through the SLURM_CONF environment variable that `start` sets.

Accounting is not optional: without slurmdbd `sacct` fails and submitit waits forever on a job that died
without writing its result; with it submitit raises UncompletedJobError. Each start wipes the spool and the
accounting database, so job ids restart at 1: a reused submitit folder would return stale results.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

STATE = Path(os.environ.get("MINI_SLURM_STATE", "/tmp/mini-slurm"))
LOCK = STATE.parent / f"{STATE.name}.lock"
PARTITION = "debug"
CLUSTER = "mini"
ACCOUNT = "mini-tests"
INSTALL = "apt-get install slurm-wlm munge slurmdbd mariadb-server"
# Ports beside SLURM's defaults (6817-6819) and MariaDB's (3306), so a machine's own daemons keep theirs.
CTLD_PORT, SLURMD_PORT, DBD_PORT, MARIADB_PORT = 16817, 16818, 16819, 13306
DB_USER, DB_PASSWORD = "slurm", "mini-tests-only"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # where SLURM's auth/munge looks by default
BINARIES = ("munged", "munge", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "slurmctld", "slurmd",
            "sacctmgr", "sinfo", "scontrol", "sbatch", "sacct")
# Stopped in this order: the scheduler before the accounting it reports to, the database last but munge.
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here (binaries missing, not root) or did not come up; says why."""


class Cluster(NamedTuple):
    partition: str
    """The one partition, Default=YES: pass it as submitit's slurm_partition."""
    conf: Path
    """The generated slurm.conf; SLURM_CONF names it."""
    started: bool
    """True when this call started the daemons, False when it found them up and reused them."""
    seconds: float
    """How long the start (or the check that reused them) took."""


def cannot_start_reason() -> str | None:
    """Why SLURM cannot be started on this machine, or None when it can be tried."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"SLURM is not installed (missing {', '.join(missing)}); as root: {INSTALL}"
    if os.geteuid() != 0:
        return f"starting SLURM's daemons needs root (uid {os.geteuid()}); run the tests as root with {INSTALL}"
    return None


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold the machine-wide lock that lets one process at a time start, check or stop the cluster
    (several pytest-xdist workers ask for it at once)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start(owner: str, timeout: float = 60) -> Cluster:
    """Start the cluster, or reuse the one this module started that is still up; `owner` is written to
    STATE/owner so that only the test run that started the daemons stops them. Sets SLURM_CONF."""
    reason = cannot_start_reason()
    if reason:
        raise SlurmUnavailable(reason)
    began = time.monotonic()
    conf = STATE / "etc" / "slurm.conf"
    os.environ["SLURM_CONF"] = str(conf)
    with locked():
        if is_up():
            return Cluster(PARTITION, conf, False, time.monotonic() - began)
        _stop_daemons()
        shutil.rmtree(STATE, ignore_errors=True)
        for folder in ("etc", "pids", "log", "spool/ctld", "spool/slurmd"):
            (STATE / folder).mkdir(parents=True)
        (STATE / "owner").write_text(owner)
        try:
            _start_daemons(conf, began + timeout)
        except SlurmUnavailable:
            _stop_daemons()
            (STATE / "owner").unlink(missing_ok=True)
            raise
    return Cluster(PARTITION, conf, True, time.monotonic() - began)


def stop(owner: str | None = None) -> bool:
    """Kill the daemons this module started (only if `owner` started them, when given); True if it did."""
    with locked():
        recorded = STATE / "owner"
        if owner is not None and (not recorded.is_file() or recorded.read_text() != owner):
            return False
        stopped = _stop_daemons()
        recorded.unlink(missing_ok=True)
        return stopped


def is_up() -> bool:
    """Whether the daemons this module started are alive and the controller answers with the node idle or
    busy (not down)."""
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd"):
        if _pid(name) is None:
            return False
    if (STATE / "pids" / "munged.pid").is_file() and _pid("munged") is None:
        return False
    if _run(["scontrol", "ping"]).returncode != 0:
        return False
    return _node_state() in {"idle", "mix", "alloc"}


def _start_daemons(conf: Path, deadline: float) -> None:
    host = _run(["hostname", "-s"], check=True).stdout.strip()
    _start_munge(deadline)
    _start_mariadb(deadline)
    conf.write_text(_slurm_conf(host, _node_hardware()))  # sacctmgr reads it to find slurmdbd
    dbd_conf = STATE / "etc" / "slurmdbd.conf"
    dbd_conf.write_text(_slurmdbd_conf(host))
    dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read: it holds the database password
    _spawn("slurmdbd", ["slurmdbd", "-D"])
    _wait(deadline, "slurmdbd answers sacctmgr", lambda: _run(["sacctmgr", "-n", "list", "cluster"]).returncode == 0)
    # The cluster, its account and root as its user must exist before slurmctld registers with slurmdbd.
    for command in (["add", "cluster", CLUSTER], ["add", "account", ACCOUNT, f"cluster={CLUSTER}"],
                    ["add", "user", "root", f"account={ACCOUNT}", f"cluster={CLUSTER}"]):
        _run(["sacctmgr", "-i", *command], check=True)
    _spawn("slurmctld", ["slurmctld", "-D", "-i"])
    _spawn("slurmd", ["slurmd", "-D"])
    _wait(deadline, f"sinfo shows the node of partition {PARTITION} idle", lambda: _node_state() == "idle")


def _start_munge(deadline: float) -> None:
    if _munge_works():
        return  # the machine's own munged (same key file) serves this cluster too
    MUNGE_SOCKET.parent.mkdir(mode=0o755, exist_ok=True)
    shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
    _spawn("munged", ["munged", "--foreground", "--force"], user="munge")
    _wait(deadline, "munged encodes and decodes a credential", _munge_works)


def _munge_works() -> bool:
    encoded = _run(["munge", "-n"])
    return encoded.returncode == 0 and _run(["unmunge"], stdin=encoded.stdout).returncode == 0


def _start_mariadb(deadline: float) -> None:
    data, sockets = STATE / "mariadb", STATE / "mariadb-run"
    sockets.mkdir()
    shutil.chown(sockets, "mysql", "mysql")  # MariaDB runs as mysql and must create its socket here
    _run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=mysql",
          "--auth-root-authentication-method=socket", "--skip-test-db"], check=True)
    _spawn("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=mysql",
                        f"--socket={sockets / 'mysqld.sock'}", f"--port={MARIADB_PORT}",
                        "--bind-address=127.0.0.1", "--skip-name-resolve",
                        f"--pid-file={sockets / 'mariadbd.pid'}", "--innodb-buffer-pool-size=64M"])
    client = ["mariadb", "--no-defaults", f"--socket={sockets / 'mysqld.sock'}", "-u", "root"]
    _wait(deadline, "MariaDB answers", lambda: _run([*client, "-e", "SELECT 1"]).returncode == 0)
    _run([*client, "-e", f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                         f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'127.0.0.1';"], check=True)


def _slurmdbd_conf(host: str) -> str:
    return f"""\
AuthType=auth/munge
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={DBD_PORT}
SlurmUser=root
PidFile={STATE}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={MARIADB_PORT}
StorageUser={DB_USER}
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
"""


def _slurm_conf(host: str, hardware: str) -> str:
    # cgroup-free (linuxproc, task/none): containers and CI machines often lack a writable cgroup tree.
    # cons_tres with CR_Core hands out single cores, so two one-CPU jobs run at once on two cores.
    return f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={STATE}/spool/ctld
SlurmdSpoolDir={STATE}/spool/slurmd
SlurmctldPidFile={STATE}/slurmctld.pid
SlurmdPidFile={STATE}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={DBD_PORT}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=300
{hardware} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _node_hardware() -> str:
    """This host's `NodeName=… CPUs=… RealMemory=…` line as `slurmd -C` measures it (no UpTime)."""
    measured = _run(["slurmd", "-C"], check=True).stdout.splitlines()
    return next(line for line in measured if line.startswith("NodeName="))


def _node_state() -> str:
    return _run(["sinfo", "-h", "-p", PARTITION, "-o", "%t"]).stdout.strip().rstrip("*~#!%$@^-")


def _spawn(name: str, command: list[str], user: str | None = None) -> None:
    """Start a daemon in the foreground in a session of its own (a Ctrl-C of pytest does not reach it:
    the session's end stops it), its log (a foreground daemon logs to stderr) in STATE/log/NAME.out, its
    pid in STATE/pids/NAME.pid."""
    with open(STATE / "log" / f"{name}.out", "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   user=user, group=user, start_new_session=True)
    (STATE / "pids" / f"{name}.pid").write_text(str(process.pid))


def _pid(name: str) -> int | None:
    """The pid of daemon `name` this module started, if it still runs (checked by its command name, so a
    reused pid is never taken for it)."""
    try:
        pid = int((STATE / "pids" / f"{name}.pid").read_text())
        command = Path(f"/proc/{pid}/comm").read_text().strip()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return pid if command == name[:15] and status != "Z" else None


def _stop_daemons() -> bool:
    stopped = False
    for name in DAEMONS:
        pid = _pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            stopped = True
            for _ in range(100):
                if _pid(name) is None:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        (STATE / "pids" / f"{name}.pid").unlink(missing_ok=True)
    return stopped


def _wait(deadline: float, what: str, ready) -> None:
    while not ready():
        if time.monotonic() > deadline:
            raise SlurmUnavailable(f"SLURM did not come up: timed out waiting until {what}\n{_log_tails()}")
        time.sleep(0.2)


def _log_tails(lines: int = 8) -> str:
    tails = []
    for log in sorted((STATE / "log").glob("*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log}\n" + "\n".join(text))
    return "\n".join(tails)


def _run(command: list[str], check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=20,
                                env={**os.environ, "SLURM_CONF": str(STATE / "etc" / "slurm.conf")})
    except subprocess.TimeoutExpired as error:
        result = subprocess.CompletedProcess(command, 124, "", f"timed out after {error.timeout} s")
    if check and result.returncode != 0:
        raise SlurmUnavailable(f"SLURM did not come up: `{' '.join(command)}` failed: "
                               f"{result.stderr.strip() or result.stdout.strip()}\n{_log_tails()}")
    return result
