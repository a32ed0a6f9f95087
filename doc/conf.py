"""Sphinx configuration of the manage documentation.

Build: ``sphinx-build -W -b html doc doc/_build/html`` (or ``make docs``).
The configuration reference in cli.rst is generated from manage/config.py
by oslo.config's Sphinx extension; the API entries come from the docstrings.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "manage"
author = "the manage authors"
copyright = "the manage authors"
try:
    from importlib.metadata import version as _version
    release = version = _version("manage")
except Exception:  # not installed: building from a bare checkout
    release = version = ""

extensions = [
    "sphinx.ext.autodoc",
    "oslo_config.sphinxext",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
default_role = "literal"
highlight_language = "none"
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "alabaster"
html_title = "manage: zero-downtime database upgrades"
html_static_path = []


def _exception_table(app):
    """``.. manage-exceptions::``: every ManageError subclass defined in the
    manage package, with its exit code and the first line of its
    docstring."""
    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList
    from docutils import nodes

    class ExceptionTable(Directive):
        def run(self):
            import importlib
            import pkgutil

            import manage
            from manage.exceptions import ManageError
            for module in pkgutil.walk_packages(manage.__path__, "manage."):
                importlib.import_module(module.name)  # subclasses live here
            found, todo = [], [ManageError]
            while todo:
                cls = todo.pop(0)
                found.append(cls)
                todo.extend(sorted(cls.__subclasses__(),
                                   key=lambda c: c.__name__))
            lines = [".. list-table::", "   :header-rows: 1",
                     "   :widths: 30 8 62", "",
                     "   * - Exception", "     - Exit", "     - Meaning"]
            for cls in found:
                doc = (cls.__doc__ or "").strip().splitlines()
                lines += ["   * - ``%s``" % cls.__name__,
                          "     - %d" % cls.exit_code,
                          "     - %s" % (doc[0] if doc else "")]
            container = nodes.container()
            self.state.nested_parse(StringList(lines), self.content_offset,
                                    container)
            return container.children

    app.add_directive("manage-exceptions", ExceptionTable)


def setup(app):
    _exception_table(app)
