"""Copy the browser assets the rendered book needs into ``book/_static/vendor``.

MathJax (math typesetting), require.js and the Jupyter widgets HTML manager are
installed from the npm registry (``npm ci``, pinned in ``package.json`` /
``package-lock.json``) and served with the book, so that the HTML renders math
and widgets without a network. The copies are build products (git-ignored).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "node_modules"
DEST = ROOT / "book" / "_static" / "vendor"

COPIES = {
    NODE / "mathjax" / "es5": DEST / "mathjax",
    NODE / "requirejs" / "require.js": DEST / "requirejs" / "require.js",
    NODE / "@jupyter-widgets" / "html-manager" / "dist": DEST / "html-manager",
}


def main() -> int:
    missing = [str(src) for src in COPIES if not src.exists()]
    if missing:
        print("missing npm packages (run `npm ci` first):", *missing, sep="\n  ", file=sys.stderr)
        return 1
    for src, dst in COPIES.items():
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    print(f"vendored MathJax, require.js and the widget manager into {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
