"""The one exception callers need to tell a bad avatar image from a bug."""


class AvatarError(ValueError):
    """The image cannot be animated (no usable frontal face, wrong shape or type)."""
