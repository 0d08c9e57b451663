"""`python -m planner ...` runs the `fitplan` command line."""

from planner.app.cli import main

if __name__ == "__main__":
    main()
