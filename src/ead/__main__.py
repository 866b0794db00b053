"""python -m ead … = the ead command (also where no console script is installed)."""

from .cli import main

raise SystemExit(main())
