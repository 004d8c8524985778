"""``python -m service.cli``: the ``hpt`` command line, as ``hpt serve`` starts its workers."""

from service.cli import main

if __name__ == "__main__":
    main()
