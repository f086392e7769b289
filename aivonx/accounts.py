"""Database side of users and API keys: the rules the API and the proxy rely on.

Users: unique usernames, and at least one active admin at all times. API keys: only the
SHA-256 of a key is stored; creating or revoking one bumps `ProxyConfig.version` in the
same transaction, so every process reloads its in-memory key set within a sync interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from aivonx.extensions import db
from aivonx.models import ApiKey, User
from aivonx.models.columns import is_row_id
from aivonx.proxy.keyring import hash_api_key
from aivonx.security import API_KEY_PREFIX, hash_password, new_api_key
from aivonx.store import bump_version

ADMIN = "admin"
# What lists show to tell keys apart: the fixed prefix and 6 random characters (36 of 256 bits).
KEY_DISPLAY_LENGTH = len(API_KEY_PREFIX) + 6


class AccountConflict(ValueError):
    """The change would break a rule (a taken username, no admin left); `field` names the cause."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- users -------------------------------------------------------------------------------


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.id)))


def get_user(user_id: int) -> User | None:
    return db.session.get(User, user_id) if is_row_id(user_id) else None


def create_user(username: str, password: str, role: str = "viewer") -> User:
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountConflict("username", f"a user named {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), role=role, active=True)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:  # created concurrently by another request
        db.session.rollback()
        raise AccountConflict("username", f"a user named {username!r} exists already") from None
    return user


def update_user(user: User, *, role: str | None = None, active: bool | None = None) -> User:
    """Change the role and/or disable or enable; refuses to leave no active admin."""
    loses_admin = user.role == ADMIN and user.active and ((role is not None and role != ADMIN) or active is False)
    if loses_admin:
        # PostgreSQL: lock the active admins first, so two admins demoting each other at
        # the same moment queue up and the second one sees the first one's change.
        db.session.scalars(select(User.id).where(User.role == ADMIN, User.active.is_(True)).with_for_update()).all()
    if role is not None:
        user.role = role
    if active is not None:
        user.active = active
    if loses_admin:
        # Counted after the change, in its transaction: on SQLite the write holds the
        # database's write lock, which serializes concurrent changes the same way.
        db.session.flush()
        if not db.session.scalar(
            select(func.count()).select_from(User).where(User.role == ADMIN, User.active.is_(True))
        ):
            field = "active" if active is False else "role"
            message = f"{user.username!r} is the last active admin; make another user an active admin first"
            db.session.rollback()
            raise AccountConflict(field, message)
    db.session.commit()
    return user


def set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    db.session.commit()


# -- API keys ----------------------------------------------------------------------------


def list_api_keys() -> list[ApiKey]:
    """Every key, revoked ones too (kept for audit), with its creator loaded."""
    return list(db.session.scalars(select(ApiKey).options(selectinload(ApiKey.user)).order_by(ApiKey.id)))


def create_api_key(name: str, creator: User | None) -> tuple[ApiKey, str]:
    """The new row and the key itself, which exists nowhere else: show it once."""
    key = new_api_key()
    api_key = ApiKey(
        name=name,
        prefix=key[:KEY_DISPLAY_LENGTH],
        key_hash=hash_api_key(key),
        user_id=creator.id if creator is not None else None,
    )
    db.session.add(api_key)
    bump_version()
    db.session.commit()
    return api_key, key


def revoke_api_key(key_id: int) -> bool:
    """Revoke an unrevoked key; False when there is no such key or it is revoked already."""
    if not is_row_id(key_id):
        return False
    revoked = db.session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    if revoked.rowcount != 1:
        db.session.rollback()
        return False
    bump_version()
    db.session.commit()
    return True


def valid_key_hashes() -> dict[str, int]:
    """SHA-256 hex -> id of every unrevoked key: what the proxy accepts."""
    rows = db.session.execute(select(ApiKey.key_hash, ApiKey.id).where(ApiKey.revoked_at.is_(None)))
    return {key_hash: key_id for key_hash, key_id in rows}


def record_key_use(last_used: Mapping[int, float]) -> None:
    """Save when keys were last used (key id -> Unix seconds).

    Several processes save their own observations; an older one never overwrites a newer.
    This is no configuration change, so the version stamp stays.
    """
    for key_id, used_at in last_used.items():
        when = datetime.fromtimestamp(used_at, UTC)
        db.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when))
            .values(last_used_at=when)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()
