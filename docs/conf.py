"""Sphinx configuration: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``.

The build needs no network. Math is rendered by MathJax, loaded from its CDN when a page is
viewed; set ``RIEMANN_DNN_MATHJAX`` to a local ``tex-mml-chtml.js`` (e.g. unpacked from
``npm pack mathjax@3``) to view pages offline. ``RIEMANN_DNN_INTERSPHINX=1`` links numpy,
torch, pymanopt and Python types to their docs (needs network at build time; off in CI).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from docutils.parsers.rst import directives
from sphinx.ext.autosummary import Autosummary
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import riemann_dnn  # noqa: E402

project = "riemann_dnn"
author = "riemann_dnn developers"
copyright = "riemann_dnn developers, MIT licence"
release = version = riemann_dnn.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]

# -- Markdown pages -----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# -- API reference --------------------------------------------------------------------------------
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# Types from other projects cannot resolve without intersphinx (which needs network): ignore
# them by name; every reference to riemann_dnn itself must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|nn|scipy|pymanopt|matplotlib|tqdm|array_api_compat)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Optimizer|Generator|ndarray|dtype|device|Parameter|Manifold)"),
    (r"py:.*", r"(collections\.abc|typing|types|pathlib|os|io|dataclasses|enum|argparse)\..*"),
    (
        r"py:.*",
        r"(Path|PathLike|Callable|Sequence|Iterable|Iterator|Mapping|Literal|Any|BinaryIO)",
    ),
    (r"py:.*", r"(optional|callable|array_like|float|int|bool|str|tuple|list|dict|None)"),
    (r"py:.*", r"(contextlib|functools|numbers|ctypes)\..*"),
    # type aliases (not objects autodoc can document) and pymanopt's result type
    (r"py:class", r"(Array|ArrayLike|Backend|StepSize|Callback|Indices|OptimizerResult|Function)"),
    # private helpers, submodules and instance attributes named in docstrings
    (r"py:func", r"(riemann_dnn\.manifolds\.sphere\.)?sphere_transport_along_geodesic"),
    (r"py:data", r"MNIST_(FILES|SHA256)"),
    (r"py:mod", r"riemann_dnn\.step\.(sgd|fused|step_size)|\.?build"),
    (r"py:attr", r"(skipped_steps|lr)"),
]

if os.environ.get("RIEMANN_DNN_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "pymanopt": ("https://pymanopt.org/docs/stable", None),
    }

# -- HTML -------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"riemann_dnn {release}"
html_static_path = []
_mathjax = os.environ.get("RIEMANN_DNN_MATHJAX")
if _mathjax:  # a local MathJax: its folder is copied into _static
    html_static_path.append(str(Path(_mathjax).resolve().parent))
    mathjax_path = Path(_mathjax).name


# -- ``.. public-api:: module``: an autosummary table of the module's ``__all__`` -----------------
class PublicAPI(Autosummary):
    """``.. public-api:: riemann_dnn.manifolds``: an autosummary of every name in ``__all__``,
    so the table follows the code."""

    required_arguments = 1
    has_content = False
    option_spec = {"nosignatures": directives.flag}

    def run(self):
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        self.content = list(module.__all__)  # the page sets the current module
        self.options.setdefault("nosignatures", None)
        self.arguments = []
        return super().run()


def _resolve_public_name(app, env, node, contnode):
    """Resolve ``riemann_dnn.data.mnist.load_mnist`` or a bare ``FiniteSumProblem`` in a
    docstring to the one documented public name it denotes (``riemann_dnn.data.load_mnist``,
    ``riemann_dnn.problems.FiniteSumProblem``): the reference documents names where users
    import them, the docstrings name them where they are defined."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    if "." in target and not target.startswith("riemann_dnn."):
        return None
    tail = target.rsplit(".", 1)[-1]
    domain = env.get_domain("py")
    matches = [
        name
        for name in domain.objects
        if name.startswith("riemann_dnn.")
        and name.rsplit(".", 1)[-1] == tail
        and name.count(".") <= 2
    ]
    if len(matches) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", matches[0], node, contnode)


class PublicConstants(SphinxDirective):
    """``.. public-constants:: riemann_dnn.data``: ``autodata`` for each constant in the
    module's ``__all__`` (autodoc's ``automodule`` skips constants imported from submodules
    that carry no ``#:`` doc comment, e.g. ``VOID_LABEL``)."""

    required_arguments = 1

    def run(self):
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        constants = [
            name
            for name in module.__all__
            if not (callable(getattr(module, name)) or isinstance(getattr(module, name), type))
        ]
        text = "\n\n".join(f".. autodata:: {module_name}.{name}" for name in constants)
        return self.parse_text_to_nodes(text) if constants else []


def setup(app):
    app.add_directive("public-api", PublicAPI)
    app.add_directive("public-constants", PublicConstants)
    app.connect("missing-reference", _resolve_public_name)
