from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aivonx.extensions import db
from aivonx.models.columns import UTCDateTime, utcnow


class ProxyConfig(db.Model):
    """The single row (id 1) of live proxy settings.

    `version` is bumped by every change to nodes or to this row; each process polls it
    (one indexed read per sync interval, never per request) and reloads when it moves.
    """

    __tablename__ = "proxy_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(32), default="least_active")
    health_interval: Mapped[float] = mapped_column(Float, default=60.0)
    standby_interval: Mapped[float] = mapped_column(Float, default=5.0)
    probe_timeout: Mapped[float] = mapped_column(Float, default=5.0)
    connect_timeout: Mapped[float] = mapped_column(Float, default=3.0)
    first_byte_timeout: Mapped[float] = mapped_column(Float, default=300.0)
    max_tries: Mapped[int] = mapped_column(Integer, default=3)
    models_max_age: Mapped[float] = mapped_column(Float, default=30.0)
    forward_authorization: Mapped[bool] = mapped_column(Boolean, default=False)
    # Ollama and /v1 routes demand `Authorization: Bearer <api key>`; off like Ollama.
    require_api_key: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
