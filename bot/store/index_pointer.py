"""The index version pointer and manifests in the database, for replicas that share no disk.

With a Chroma server (``DANGJIAN_CHROMA_URL``) every replica reads which collection serves from
here, so one `dangjian ingest` or `/reindex` switches them all within a few seconds.
"""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.db import Base, Database, UTCDateTime, utcnow


class IndexPointerRow(Base):
    __tablename__ = "index_pointer"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    current: Mapped[str] = mapped_column(String(64))
    previous: Mapped[str | None] = mapped_column(String(64), nullable=True)
    switched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IndexVersionRow(Base):
    __tablename__ = "index_versions"
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    manifest: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DatabasePointerStore:
    """`retrieval.store.PointerStore` backed by the bot's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self) -> dict | None:
        with self.db.session() as s:
            row = s.get(IndexPointerRow, 1)
            if row is None:
                return None
            return {"current": row.current, "previous": row.previous, "switched_at": row.switched_at.isoformat()}

    def write(self, current: str, previous: str | None) -> None:
        with self.db.session() as s:
            row = s.get(IndexPointerRow, 1, with_for_update=self.db.is_postgres)
            if row is None:
                s.add(IndexPointerRow(id=1, current=current, previous=previous, switched_at=utcnow()))
            else:
                row.current, row.previous, row.switched_at = current, previous, utcnow()

    def save_manifest(self, version: str, manifest: dict) -> None:
        with self.db.session() as s:
            s.merge(IndexVersionRow(version=version, manifest=json.dumps(manifest, ensure_ascii=False)))

    def load_manifest(self, version: str) -> dict | None:
        with self.db.session() as s:
            row = s.get(IndexVersionRow, version)
            return json.loads(row.manifest) if row else None

    def versions(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(IndexVersionRow.version).order_by(IndexVersionRow.version)))

    def forget(self, version: str) -> None:
        with self.db.session() as s:
            row = s.get(IndexVersionRow, version)
            if row is not None:
                s.delete(row)
