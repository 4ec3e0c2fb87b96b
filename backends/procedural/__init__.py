"""Procedural CPU talking-head animator: one portrait, audio in, lip-synced frames out.

    anim = ProceduralAnimator(fps=25, seed=0)
    avatar = anim.prepare_avatar(image_rgb)          # finds the face once; AvatarError if none
    frames, state = anim.render(avatar, audio_16k, AnimState())
    frames, state = anim.idle(avatar, 25, state)     # listening: same life, mouth closed
"""

from .animator import ProceduralAnimator
from .avatar import Avatar
from .errors import AvatarError
from .backend import Procedural  # registers the "procedural" animator backend
from .state import AnimState

__all__ = ["AnimState", "Avatar", "AvatarError", "Procedural", "ProceduralAnimator"]
