"""``python -m detect`` runs the ``retail-detect`` command line."""

from detect.engine.runtime.threads import openmp_env_defaults

openmp_env_defaults()  # before anything imports torch

from detect.cli import main  # noqa: E402

raise SystemExit(main())
