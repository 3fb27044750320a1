"""Settings: one YAML file, ``GPUWATCH_...`` environment variables, command-line flags.

Later sources override earlier ones (file < environment < flags). Every setting is a
field of a pydantic model (one module of ``sections/`` per part of gpuwatch, assembled
in ``settings.py``) whose description gives its unit and why its default is what it is;
``docs/settings.md`` is generated from those descriptions.
"""
