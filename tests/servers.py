"""Real PostgreSQL and Chroma servers on loopback, for tests (a pytest plugin).

Register once in ``tests/conftest.py``::

    pytest_plugins = ["tests.servers"]

and ask for the session fixtures ``pg_url`` (a SQLAlchemy URL
``postgresql+psycopg://postgres@127.0.0.1:PORT/dangjian``) and ``chroma_url``
(``http://127.0.0.1:PORT``). The context managers :func:`postgres_server` and
:func:`chroma_server` start private servers for tests that need their own.

* PostgreSQL comes from Debian's ``postgresql`` package: ``initdb``/``postgres`` are looked up on
  ``PATH`` and under ``/usr/lib/postgresql/*/bin`` (newest first). When missing, ``apt-get install
  -y postgresql`` is tried once (as root). Under root the server runs as the ``postgres`` OS user
  (PostgreSQL refuses to run as root) in a temp dir owned by that user. Trust authentication,
  loopback TCP only, the unix socket inside the temp dir, ``fsync=off``.
* Chroma is the ``chroma`` CLI of the virtualenv running the tests (``chroma run --path``), with
  telemetry off, ``HOME`` and the working directory inside its temp dir.

Both listen on 127.0.0.1 on a free port, are stopped and their temp dirs removed when the context
exits (also when a test fails), and get the parent-death signal so a killed pytest does not leave
them running. When a server truly cannot be had the fixture skips, loudly: a red banner at once
and again in the terminal summary. With ``DANGJIAN_TEST_REQUIRE_SERVERS=1`` (set it in CI) it
fails instead.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

import pytest

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
PG_DATABASE = "dangjian"
PG_OS_USER = "postgres"
REQUIRE_ENV = "DANGJIAN_TEST_REQUIRE_SERVERS"
_PORT_ATTEMPTS = 3  # a free port found by binding to 0 can be taken before the server binds it
_PR_SET_PDEATHSIG = 1


class ServerUnavailable(RuntimeError):
    """The server's programs are not installed and could not be installed."""


class ServerFailed(RuntimeError):
    """The server was found but did not start; the message ends with its log."""


# Helpers ------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loud(message: str) -> None:
    """Print a banner on the real stderr (fd 2 may be captured; the summary repeats it)."""
    banner = "!" * 100
    print(f"\n{banner}\n{message}\n{banner}", file=sys.__stderr__ or sys.stderr, flush=True)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the test process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls prctl

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)  # after setuid (Popen does that first)

    return preexec


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen | None, first_signal: int) -> None:
    """Ask the server to stop, then insist."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((first_signal, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    """Poll ``ready`` until it is true; fail when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{what} exited with code {proc.returncode} while starting; log:\n{_log_tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise ServerFailed(f"{what} did not become ready within {timeout:.0f} s; log:\n{_log_tail(log)}")


def _port_taken(log: Path) -> bool:
    text = _log_tail(log).lower()
    return "address already in use" in text or "could not bind" in text or "addrinuse" in text


# PostgreSQL -----------------------------------------------------------------------------------------
def _pg_candidate_dirs() -> list[Path]:
    dirs: list[Path] = []
    for name in ("initdb", "postgres"):
        found = shutil.which(name)
        if found:
            dirs.append(Path(found).resolve().parent)  # /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin
            dirs.append(Path(found).parent)

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit()) or (0,)

    dirs.extend(Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True))
    dirs.append(Path("/usr/local/pgsql/bin"))
    return dirs


def find_postgres_bindir() -> Path | None:
    """The first folder holding both ``initdb`` and ``postgres``, or None."""
    for folder in _pg_candidate_dirs():
        if all(os.access(folder / name, os.X_OK) and (folder / name).is_file() for name in ("initdb", "postgres")):
            return folder
    return None


def _apt_install_postgresql() -> str:
    """Run ``apt-get install -y postgresql`` (after ``apt-get update`` if the first try fails).

    Returns what happened, for the skip message."""
    if os.geteuid() != 0:
        return "not root, so `apt-get install -y postgresql` was not attempted"
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available to install the `postgresql` package"

    def run(*args: str) -> tuple[bool, str]:
        cmd = [apt, *args]
        loud(f"tests/servers.py: PostgreSQL binaries not found; running: {' '.join(cmd)}")
        try:
            done = subprocess.run(
                cmd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=900,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"`{' '.join(cmd)}` could not run: {exc}"
        output = (done.stdout + done.stderr).strip()
        print(output[-2000:], file=sys.__stderr__ or sys.stderr, flush=True)
        return done.returncode == 0, f"`{' '.join(cmd)}` exited with code {done.returncode}: {output[-600:]}"

    ok, outcome = run("install", "-y", "postgresql")
    if ok:
        return outcome
    ok, outcome = run("update")
    if not ok:
        return outcome
    return run("install", "-y", "postgresql")[1]


@functools.cache
def _postgres_bindir_or_reason() -> tuple[Path | None, str]:
    """Find the binaries, installing the package at most once per test process."""
    found = find_postgres_bindir()
    if found:
        return found, ""
    outcome = _apt_install_postgresql()
    found = find_postgres_bindir()
    if found:
        loud(f"tests/servers.py: installed PostgreSQL; using {found}")
        return found, ""
    return None, (
        "PostgreSQL `initdb`/`postgres` not found on PATH or under /usr/lib/postgresql/*/bin, and "
        f"installing failed: {outcome}"
    )


def postgres_bindir() -> Path:
    """The folder with ``initdb`` and ``postgres``; raises :class:`ServerUnavailable`."""
    found, reason = _postgres_bindir_or_reason()
    if found is None:
        raise ServerUnavailable(reason)
    return found


@dataclass(frozen=True)
class _RunAs:
    """The OS user the PostgreSQL programs run as (None fields: the current user)."""

    uid: int | None = None
    gid: int | None = None

    def popen_kwargs(self) -> dict:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _postgres_os_user() -> _RunAs:
    """Under root: the ``postgres`` user (created, loudly, if the package did not make it)."""
    if os.geteuid() != 0:
        return _RunAs()
    try:
        entry = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        loud(f"tests/servers.py: running as root and there is no `{PG_OS_USER}` OS user; creating it with useradd")
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/postgresql",
             "--shell", "/usr/sbin/nologin", PG_OS_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(PG_OS_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _searchable_by_others(folder: Path) -> bool:
    """Whether every folder from / down to ``folder`` lets other users pass (o+x)."""
    for part in [folder, *folder.parents]:
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _make_temp_dir(prefix: str, owner: _RunAs) -> Path:
    base = Path(tempfile.gettempdir()).resolve()
    if len(str(base)) > 60 or (owner.uid is not None and not _searchable_by_others(base)):
        # unix socket paths are limited to ~107 bytes, and the postgres user must reach the dir
        base = Path("/tmp")
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    if owner.uid is not None:
        os.chown(root, owner.uid, owner.gid if owner.gid is not None else -1)
    return root


def _pg_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no stray PGDATA/PGPORT
    env.update({"HOME": str(root), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
    return env


def _pg_accepts(port: int, database: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=database, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


#: The temporary folder of each server started in this process, by URL (tests check it is removed).
SERVER_ROOTS: dict[str, Path] = {}


@contextlib.contextmanager
def postgres_server(database: str = PG_DATABASE, start_timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Start a throw-away PostgreSQL on 127.0.0.1 and yield its SQLAlchemy URL.

    ``database`` is created empty; the ``postgres`` role connects without a password (trust
    authentication, loopback only). Raises :class:`ServerUnavailable` when the binaries cannot be
    had, :class:`ServerFailed` when the server does not start.
    """
    import psycopg

    bindir = postgres_bindir()
    owner = _postgres_os_user()
    root = _make_temp_dir("dangjian-pg-", owner)
    data, sockets, log = root / "data", root / "sock", root / "postgres.log"
    env = _pg_env(root)
    proc: subprocess.Popen | None = None
    try:
        sockets.mkdir()
        if owner.uid is not None:
            os.chown(sockets, owner.uid, owner.gid if owner.gid is not None else -1)
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-locale", "--no-sync", "--no-instructions"],
            cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
            **owner.popen_kwargs(),
        )
        if init.returncode != 0:
            raise ServerFailed(f"initdb failed with code {init.returncode}:\n{init.stdout}{init.stderr}")
        for attempt in range(_PORT_ATTEMPTS):
            port = free_port()
            with open(log, "w", encoding="utf-8") as out:
                proc = _start(
                    [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "logging_collector=off"],
                    out, root, env, signal.SIGINT, owner.popen_kwargs(),
                )
            try:
                _wait_until(lambda: _pg_accepts(port, "postgres"), proc, "postgres", log, start_timeout)
                break
            except ServerFailed:
                _stop(proc, signal.SIGINT)
                if attempt + 1 < _PORT_ATTEMPTS and _port_taken(log):
                    continue
                raise
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        SERVER_ROOTS[url] = root
        yield url
    finally:
        _stop(proc, signal.SIGINT)  # fast shutdown: disconnects clients, no checkpoint wait
        shutil.rmtree(root, ignore_errors=True)


def _start(cmd: list[str], out: IO[str], cwd: Path, env: dict[str, str], death_signal: int,
           extra: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent(death_signal), **(extra or {}),
    )


# Chroma ---------------------------------------------------------------------------------------------
def chroma_binary() -> Path:
    """The ``chroma`` CLI beside the running interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "chroma"  # not resolved: the venv's bin, not the base python's
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("chroma")
    if found:
        return Path(found)
    raise ServerUnavailable(
        f"the `chroma` server CLI is neither beside {sys.executable} nor on PATH; "
        "install the project's dependencies (chromadb) into this virtualenv"
    )


def _chroma_alive(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(f"{url}/api/v2/heartbeat", timeout=2) as resp:
            return resp.status == 200 and isinstance(json.loads(resp.read()), dict)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def chroma_server(start_timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Start a throw-away Chroma server on 127.0.0.1 and yield ``http://127.0.0.1:PORT``.

    Data, log, ``HOME`` and working directory are all inside one temp dir; telemetry is off.
    Raises :class:`ServerUnavailable` without the CLI, :class:`ServerFailed` if it does not start.
    """
    exe = chroma_binary()
    root = Path(tempfile.mkdtemp(prefix="dangjian-chroma-"))
    log = root / "chroma.log"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "HOME": str(root), "NO_COLOR": "1"}
    proc: subprocess.Popen | None = None
    try:
        for attempt in range(_PORT_ATTEMPTS):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with open(log, "w", encoding="utf-8") as out:
                proc = _start(
                    [str(exe), "run", "--path", str(root / "db"), "--host", "127.0.0.1", "--port", str(port)],
                    out, root, env, signal.SIGTERM,
                )
            try:
                _wait_until(lambda: _chroma_alive(url), proc, "chroma", log, start_timeout)
                break
            except ServerFailed:
                _stop(proc, signal.SIGTERM)
                if attempt + 1 < _PORT_ATTEMPTS and _port_taken(log):
                    continue
                raise
        SERVER_ROOTS[url] = root
        yield url
    finally:
        _stop(proc, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


# pytest plugin ---------------------------------------------------------------------------------------
_UNAVAILABLE = pytest.StashKey[list[str]]()


def _say(config: pytest.Config, message: str) -> None:
    """Write on the terminal now, past output capturing."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(f"!!! {message}", red=True, bold=True)
    else:
        loud(message)


def _unavailable(config: pytest.Config, what: str, exc: ServerUnavailable) -> NoReturn:
    message = f"{what} SERVER UNAVAILABLE - tests that need it are NOT run: {exc}"
    config.stash.setdefault(_UNAVAILABLE, []).append(message)
    _say(config, message)
    if os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "False"):
        pytest.fail(f"{message} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL server shared by the session (database ``dangjian``)."""
    if find_postgres_bindir() is None:
        _say(request.config, "tests/servers.py: PostgreSQL binaries not found; trying `apt-get install -y postgresql`")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except ServerUnavailable as exc:
            _unavailable(request.config, "POSTGRESQL", exc)
        yield url


@pytest.fixture(scope="session")
def chroma_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a Chroma server shared by the session."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(chroma_server())
        except ServerUnavailable as exc:
            _unavailable(request.config, "CHROMA", exc)
        yield url


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    messages = list(config.stash.get(_UNAVAILABLE, []))
    for report in terminalreporter.stats.get("skipped", []):  # skips reported by xdist workers
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "SERVER UNAVAILABLE" in reason and reason not in messages:
            messages.append(reason)
    if messages:
        terminalreporter.write_sep("!", "LOOPBACK SERVERS UNAVAILABLE: THEIR TESTS DID NOT RUN", red=True, bold=True)
        for message in messages:
            terminalreporter.write_line(message, red=True, bold=True)
        terminalreporter.write_line(
            f"CI must run them: install PostgreSQL / chromadb; set {REQUIRE_ENV}=1 to make this an error "
            "instead of a skip.", red=True, bold=True,
        )
