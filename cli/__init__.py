"""Entry points above the core: the ``docindex`` command and the dev supervisor."""
