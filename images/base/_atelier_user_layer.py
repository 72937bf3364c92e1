"""The user's layer first on sys.path, as PEP 370 puts a user site outside a venv.

Imported by ``00-atelier-user-layer.pth`` in the image venv's site-packages, while
``site`` processes that folder. CPython puts a venv's own site-packages ahead of the
user site ("venv takes precedence over user-site", site.venv), so pip refuses to install
a package the image has at another version into the user site, and one installed there
by other means would be inert. Atelier's user layer (``$PYTHONUSERBASE``, on the home:
see ``atelier-env``) goes just before the image's site-packages instead, so a package
the user installs on purpose replaces the image's; the start hook reports each such
package once (``atelier-env report``). Nothing happens with ``python -s`` or
``PYTHONNOUSERSITE``, or when the layer's folder does not exist.
"""

import os
import site
import sys


def _user_first() -> None:
    if sys.flags.no_user_site or os.environ.get("PYTHONNOUSERSITE"):
        return
    user = site.getusersitepackages()
    if not os.path.isdir(user) or user in sys.path:
        return
    here = os.path.dirname(os.path.abspath(__file__))  # the image's site-packages
    sys.path.insert(sys.path.index(here) if here in sys.path else len(sys.path), user)


_user_first()
