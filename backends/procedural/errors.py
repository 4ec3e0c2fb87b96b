"""The one exception callers need to tell a bad avatar image from a bug (shared by every animator
backend, so it lives in avatar_core)."""

from avatar_core.types import AvatarError

__all__ = ["AvatarError"]
