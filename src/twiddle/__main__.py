"""``python -m twiddle``: the command line (see :mod:`twiddle._cli`)."""

from __future__ import annotations

from twiddle._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
