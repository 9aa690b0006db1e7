"""The ``riemann-dnn`` command line (see ``riemann-dnn --help``)."""
