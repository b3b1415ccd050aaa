"""Database access: one SQLAlchemy engine for all state (SQLite by default, PostgreSQL by URL).

Feature modules declare their tables on :class:`Base` (import this module, subclass ``Base``); the
composition root imports them before :meth:`Database.create_schema` creates whatever is missing. On
PostgreSQL creation runs under an advisory lock so two replicas starting together do not race.

A database that cannot be reached surfaces as :class:`bot.core.errors.StorageUnavailable` from
every session, never as a driver or SQLAlchemy error.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String, TypeDecorator, create_engine, delete, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from bot.core.errors import StorageUnavailable

SCHEMA_VERSION = 1
_ADVISORY_LOCK_KEY = 0x64616E67  # "dang"
_UNREACHABLE = (OperationalError, InterfaceError)


class DatabaseUnavailable(StorageUnavailable):
    """The database cannot be opened; the message is shown to the operator."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes stored as UTC on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):  # type: ignore[override]
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class SchemaTooNew(DatabaseUnavailable):
    """The database was created by a newer version of the program (retrying cannot help)."""


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class ProcessedMessage(Base):
    """A platform message id seen once; a unique row makes redeliveries no-ops across replicas."""

    __tablename__ = "processed_messages"
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class AuditEntry(Base):
    """Who tried an admin action, when, and whether it was allowed."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    platform: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(200))
    allowed: Mapped[bool] = mapped_column(default=False)


class Database:
    """Owns the engine and sessions. Construct once, call :meth:`create_schema` at start-up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error; an unreachable database
        raises :class:`StorageUnavailable`."""
        try:
            with self._sessions() as session:
                try:
                    yield session
                    session.commit()
                except Exception:
                    session.rollback()
                    raise
        except _UNREACHABLE as exc:
            raise StorageUnavailable(f"database unavailable: {type(exc.orig or exc).__name__}") from exc

    def create_schema(self) -> None:
        """Create missing tables (every module's tables must be imported first); one attempt.

        Raises :class:`DatabaseUnavailable` (with the URL, password masked) when the database
        cannot be reached; the composition root retries with backoff."""
        try:
            self._create_schema()
        except _UNREACHABLE as exc:
            raise DatabaseUnavailable(f"无法打开数据库 {self.safe_url}：{exc.orig}") from exc

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
            Base.metadata.create_all(conn)
            row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
            if row is None:
                conn.execute(SchemaInfo.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            elif row[0] > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"数据库结构版本 {row[0]} 比本程序支持的 {SCHEMA_VERSION} 新，请升级程序。"
                )

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    # Shared small stores ---------------------------------------------------
    def claim_message(self, platform: str, message_id: str) -> bool:
        """Record a message id; True the first time, False for a redelivery (any replica)."""
        try:
            with self.session() as s:
                s.add(ProcessedMessage(platform=platform, message_id=message_id))
            return True
        except IntegrityError:
            return False

    def forget_messages(self, seen_before: datetime) -> int:
        """Delete message ids recorded before ``seen_before`` (past every platform's retries)."""
        with self.session() as s:
            return s.execute(delete(ProcessedMessage).where(ProcessedMessage.seen_at < seen_before)).rowcount

    def audit(self, platform: str, user_id: str, action: str, allowed: bool) -> None:
        with self.session() as s:
            s.add(AuditEntry(platform=platform, user_id=user_id, action=action[:200], allowed=allowed))


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
