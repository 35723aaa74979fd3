"""Job state in SQLite (WAL): safe for the server and its job processes to share."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{24}$")
FINAL = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,          -- sha256 of the bearer token that created the job
    status TEXT NOT NULL,         -- queued, running, done, failed, cancelled
    mode INTEGER NOT NULL,
    options TEXT NOT NULL,        -- JSON
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    n_scales INTEGER,
    available INTEGER NOT NULL DEFAULT 0,
    chosen_scales INTEGER,
    progress TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
"""


class QueueFull(Exception):
    """A token already has as many queued (or active) jobs as the server allows."""


def token_owner(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_job_id() -> str:
    """24 URL-safe characters (144 random bits): unguessable, and never path-like."""
    return secrets.token_urlsafe(18)


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: the store is used from threads and processes alike.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        job = dict(row)
        job["options"] = json.loads(job["options"])
        job["progress"] = json.loads(job["progress"])
        return job

    def create(
        self,
        owner: str,
        mode: int,
        options: dict[str, Any],
        *,
        max_queued: int | None = None,
        max_active: int | None = None,
    ) -> str:
        """Queue a job; with limits, the count and the insert are one transaction, so concurrent
        submissions cannot all slip past the check. Raises :class:`QueueFull`."""
        job_id = new_job_id()
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                counts = dict(
                    db.execute(
                        "SELECT status, COUNT(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'running') "
                        "GROUP BY status",
                        (owner,),
                    ).fetchall()
                )
                queued, running = counts.get("queued", 0), counts.get("running", 0)
                if max_queued is not None and queued >= max_queued:
                    raise QueueFull(f"queue full: at most {max_queued} queued jobs per token")
                if max_active is not None and queued + running >= max_active:
                    raise QueueFull(f"queue full: at most {max_active} jobs in progress per token")
                db.execute(
                    "INSERT INTO jobs (id, owner, status, mode, options, created) VALUES (?, ?, 'queued', ?, ?, ?)",
                    (job_id, owner, mode, json.dumps(options), time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        if not JOB_ID.match(job_id):
            return None
        with self._conn() as db:
            return self._row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def update(self, job_id: str, **fields: Any) -> None:
        for key in ("options", "progress"):
            if key in fields:
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def claim_next(self) -> dict[str, Any] | None:
        """Atomically move the oldest queued job to running and return it."""
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', started = COALESCE(started, ?), attempts = attempts + 1 "
                "WHERE id = ?",
                (time.time(), row["id"]),
            )
            db.execute("COMMIT")
        return self.get(row["id"])

    def requeue_running(self) -> list[str]:
        """After a restart: jobs that were running go back to the queue (they resume from checkpoints)."""
        with self._conn() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
            db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'")
        return ids

    def count(self, owner: str, status: str) -> int:
        with self._conn() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND status = ?", (owner, status)).fetchone()[0]

    def queue_position(self, job_id: str) -> int | None:
        job = self.get(job_id)
        if job is None or job["status"] != "queued":
            return None
        with self._conn() as db:
            return db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND created < ?", (job["created"],)
            ).fetchone()[0]

    def delete(self, job_id: str) -> None:
        with self._conn() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
