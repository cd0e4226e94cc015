"""The ``connguard`` command: one module per subcommand, registered in ``main``."""
