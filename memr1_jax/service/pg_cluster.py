"""A throwaway local PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a loopback port: what the
tests and ``benchmarks/serve.py`` run the PostgreSQL store against, and a way to try it.

    from memr1_jax.service.pg_cluster import LocalCluster
    with LocalCluster() as pg:
        url = pg.create_database("memories")    # postgresql://memr1:...@127.0.0.1:PORT/memories

PostgreSQL refuses to run as root; as root the cluster's folder is given to the ``postgres``
user and its commands run through ``runuser -u postgres``. TCP logins need the password
(scram-sha-256), so a wrong password is refused as on a real server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid

USER = "memr1"


def binaries_missing() -> str | None:
    """Why no cluster can start here (None: initdb and pg_ctl are on the PATH)."""
    missing = [b for b in ("initdb", "pg_ctl") if shutil.which(b) is None]
    return f"no PostgreSQL binaries ({', '.join(missing)}) on the PATH" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, password: str = "memr1-test-pw"):
        self.password, self.port = password, _free_port()
        self.dir = tempfile.mkdtemp(prefix="memr1-pg-")
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.started = False

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        p = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({p.returncode}): {p.stderr.strip()[-1500:]}")

    def start(self) -> "LocalCluster":
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", self.data, "-U", USER, "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on", "start")
        self.started = True
        return self

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://{USER}:{self.password if password is None else password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its URL."""
        import psycopg
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
            self.started = False

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
