from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aivonx.extensions import db
from aivonx.models.columns import UTCDateTime, utcnow


class Node(db.Model):
    """An Ollama server. `enabled` belongs to operators; health checks never change it."""

    __tablename__ = "node"
    # Never reuse a deleted node's id: shared counters and statuses are keyed by it.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    base_url: Mapped[str] = mapped_column(String(500), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Lower priority values are preferred; a worse tier serves only when no better node can.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Relative capacity: least_active compares active requests divided by weight.
    weight: Mapped[int] = mapped_column(Integer, default=1)
    # 0 means unlimited.
    max_concurrent: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Node {self.id} {self.name} {self.base_url}>"
