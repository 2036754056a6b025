"""Every command-line and UI front end: argparse and Gradio, thin over the package.

Each module has ``main(argv=None, *, prog=None) -> exit code``; ``ovseg.apps.main`` dispatches
the ``ovseg COMMAND`` sub-commands to them, and the scripts in the repository's ``demo/`` and
``tools/`` call the same functions.
"""
