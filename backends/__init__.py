"""Stage backends: one module (or package) per backend, each registering one class and its config.

The registry (`avatar_core.registry`) imports every module here the first time a backend is looked
up; a backend's heavy or GPU-only imports live inside its methods, so importing this package is
cheap on any machine.
"""
