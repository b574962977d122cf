"""Shared pieces of the benchmark: statistics, the machine, the corpus, servers we start.

Why one place: every figure is a comparison inside one run (these machines are
shared and noisy), so every figure needs the same statistics (median and
spread over >= 5 runs, the median of paired ratios), the same corpus handling
(the delivery contract of tests/corpus/README.md) and the same discipline with
processes: each one started here is stopped by its pid, with a bounded wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GEN_CORPUS = ROOT / "tests" / "corpus" / "gen_corpus.py"
PY = sys.executable

if str(ROOT) not in sys.path:  # bench/ runs as ``python -m bench`` from the repo root
    sys.path.insert(0, str(ROOT))


# -- statistics -------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and relative spread ((max-min)/median) of one figure's runs."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "spread": None, "runs": []}
    med = statistics.median(vals)
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "spread": (max(vals) - min(vals)) / med if med else None,
        "runs": vals,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..1)."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[i])


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean nothing without it."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    versions: dict[str, str] = {}
    for dist in (
        "aiosmtpd",
        "aiosmtplib",
        "aioimaplib",
        "aiohttp",
        "flanker",
        "sqlalchemy",
        "aiosqlite",
        "py-spy",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    tools = {
        "sqlite": sqlite3.sqlite_version,
        "clamd": _tool_version(["clamd", "--version"]),
        "dovecot": _tool_version(["dovecot", "--version"]),
        "postfix": _tool_version(["postconf", "-d", "-h", "mail_version"]),
        "wrk": _tool_version(["wrk", "--version"]),
    }
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "tools": tools,
        "loadavg_at_start": os.getloadavg(),
        "git": _git(),
    }


def _git() -> str | None:
    """The commit measured, with ``-dirty`` when the tree has changes: the figures belong
    to that code."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _tool_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None and not Path("/usr/sbin", cmd[0]).exists():
        return None
    exe = shutil.which(cmd[0]) or str(Path("/usr/sbin", cmd[0]))
    try:
        out = subprocess.run(
            [exe, *cmd[1:]], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:80] if text else None


def skipped_by_env(tool: str) -> bool:
    """``BENCH_SKIP=postfix,wrk`` behaves as if the tool were absent (to try CI's path)."""
    return tool in {t.strip() for t in os.environ.get("BENCH_SKIP", "").split(",")}


# -- processes ----------------------------------------------------------------------------------


def stop_pid(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM our child by pid, wait, SIGKILL if it does not go."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def peak_rss(pid: int, *, own: bool = False) -> int:
    """VmHWM (peak resident set) of a live process with its live children's (the
    daemon's parse workers hold the parsed copy of a message), in bytes: the sum of
    peaks, so at most what the tree ever held at once overstated, never hidden in a
    child; ``own``: the process alone."""
    total = _hwm(pid)
    if not own:
        for child in _children(pid):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, RuntimeError):
                total += _hwm(child)
    return total


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int, *, own: bool = False) -> float:
    """User+system CPU a live process has used so far, with its children's (the daemon's
    parse workers, live ones and reaped ones); ``own``: the process alone."""
    fields = _stat(pid)
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if own:
        return total
    total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        with contextlib.suppress(OSError, IndexError):
            total += cpu_seconds(child)
    return total


def loop_cpu_seconds(pid: int) -> float:
    """User+system CPU of a live process's main thread so far: the daemon's event loop.
    What else of the process's own CPU there is, is its other threads' (the store's
    writer; blob and big-parse threads when any run)."""
    fields = _stat(f"{pid}/task/{pid}")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runnable_wait_seconds(pid: int) -> float:
    """Seconds the live threads of a process and of its live children have spent ready to
    run but waiting for a free core, so far (the scheduler's run-queue wait,
    /proc/*/task/*/schedstat). A thread waiting for the GIL sleeps: not counted here."""
    total = 0
    for proc in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{proc}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


# The daemon's worker processes by the module they run (gateway/workers.py spawns them).
WORKER_KINDS = {"gateway.intake.parse_worker": "parse", "gateway.sending.worker": "send"}


def worker_cpu_seconds(pid: int) -> dict[str, float]:
    """User+system CPU of the daemon's live worker processes so far, by kind (parse,
    send): what of ``cpu_seconds`` is not the daemon's own. A worker that died and was
    respawned meanwhile is not counted here (``cpu_seconds`` counts it)."""
    out = dict.fromkeys(WORKER_KINDS.values(), 0.0)
    for child in _children(pid):
        with contextlib.suppress(OSError, IndexError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            kind = next((k for m, k in WORKER_KINDS.items() if m.encode() in argv), None)
            if kind is not None:
                out[kind] += cpu_seconds(child)
    return out


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command's name (``pid`` may be
    ``<pid>/task/<tid>`` for one thread's)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def settle(pid: int, quiet: float = 0.01, window: float = 0.3, limit: float = 15.0) -> float:
    """Wait until a just-started server is idle (under ``quiet`` s of CPU in ``window``).

    The gateway is ready to answer before its start-up work is done (the retention
    purge, the scanner's probe; the language model, about 0.6 s of CPU, loads in a
    thread for the first mail that needs it, bench/fig_smtp.py ``_warm``): counted into
    a run of a few hundred messages, that alone read as hundreds of µs per message.
    Returns the seconds waited.
    """
    t0 = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - t0 < limit:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last < quiet:
            break
        last = now
    return time.monotonic() - t0


class Sink:
    """A bare aiosmtpd server in its own process whose handler only answers 250.

    The ceiling of the SMTP layer: the gateway pays at least this much per
    message before it parses or stores anything.
    """

    def __init__(self, count: bool = False, loop: str = "asyncio") -> None:
        args = [PY, "-m", "bench.sink", "--loop", loop] + (["--count"] if count else [])
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            stop_pid(self.proc)
            raise RuntimeError("sink did not start")
        self.port = int(line)

    def wait_count(self, n: int, timeout: float) -> float:
        """Seconds from now until the sink has counted ``n`` mails (``count=True`` only)."""
        t0 = time.perf_counter()
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if int(line) >= n:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"sink got {line.strip()} of {n}")
        raise RuntimeError("sink died")

    def stop(self) -> None:
        stop_pid(self.proc)


# -- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mail:
    wave: int
    rcpt: str
    data: bytes  # CRLF line ends, not dot-stuffed
    scan: bool  # the gateway would hand it to clamd (attachments, enclosed messages)


def corpus(count: int, workdir: Path, seed: int = 7) -> list[Mail]:
    """The generated helpdesk mix, in delivery order, ``{{TAG:...}}`` replaced by ``unknown``.

    The bench cannot read acknowledgements back, so it follows the contract's
    fallback for unknown tags; replies still thread by In-Reply-To/References.
    """
    folder = workdir / f"corpus-{count}-{seed}"
    if not (folder / "expectations.json").exists():
        subprocess.run(
            [PY, str(GEN_CORPUS), str(folder), "--count", str(count), "--seed", str(seed)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    from gateway.intake.pipeline import needs_scan
    from parsers.core import parse

    exp = json.loads((folder / "expectations.json").read_text(encoding="utf-8"))
    mails = []
    for m in sorted(exp["messages"], key=lambda m: m["file"]):
        data = (folder / m["file"]).read_bytes()
        data = _replace_tags(data)
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        mails.append(Mail(int(m["wave"]), m["to"], data, needs_scan(parse(data))))
    return mails


def _replace_tags(data: bytes) -> bytes:
    while b"{{TAG:" in data:
        start = data.index(b"{{TAG:")
        end = data.find(b"}}", start)
        if end < 0:
            break
        data = data[:start] + b"unknown" + data[end + 2 :]
    return data


def write_load(mails: Sequence[Mail], path: Path) -> Path:
    """The load client's input: waves of (rcpt, dot-stuffed DATA payload), pickled once."""
    waves: dict[int, list[tuple[str, bytes]]] = {}
    for m in mails:
        waves.setdefault(m.wave, []).append((m.rcpt, dot_stuff(m.data)))
    with open(path, "wb") as f:
        pickle.dump([waves[w] for w in sorted(waves)], f)
    return path


def dot_stuff(data: bytes) -> bytes:
    body = data if data.endswith(b"\r\n") else data + b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def run_load(
    port: int | Sequence[int], load: Path, conc: int, timeout: float = 900, lmtp: bool = False
) -> dict[str, Any]:
    """Run the load generator (bench/smtp_client.py) in its own process; its JSON result.
    Several ports spread the ``conc`` sessions round-robin across them (several instances);
    ``lmtp``: speak LMTP to the gateway's LMTP listener."""
    ports = [port] if isinstance(port, int) else list(port)
    out = subprocess.run(
        [
            PY,
            str(ROOT / "bench" / "smtp_client.py"),
            ",".join(map(str, ports)),
            str(load),
            str(conc),
            *(["lmtp"] if lmtp else []),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout))


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder under /tmp, traversable by Dovecot's and Postfix's users."""
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def count_rows(db: Path, table: str = "messages") -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0
