"""Stage backends: one module (or package) per backend, each registering one class and its config.

Each module is named in pyproject.toml's `talking_avatar.backends` entry points, through which the
registry (`avatar_core.registry`) finds and imports it the first time a backend is looked up; a
backend's heavy or GPU-only imports live inside its methods, so importing it is cheap on any machine.
"""
