"""charlm's version, the one place it is written (pyproject.toml reads it here, ``[tool.hatch.version]``).

A module of its own so that a checkpoint or a report can name the version without importing
``charlm`` itself, whose ``load`` leads back to them.
"""

__version__ = "0.1.0"
