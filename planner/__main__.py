"""`python -m planner ...` runs the `fitplan` command line."""

from planner.app.cli import app

if __name__ == "__main__":
    app(prog_name="fitplan")
