"""``python -m lambdalite``: the command line of :mod:`lambdalite.cli`."""

from lambdalite.cli import main

if __name__ == "__main__":
    main()
