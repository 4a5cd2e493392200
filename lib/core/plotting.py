"""One figure style for the whole book, with colour *roles* rather than ad-hoc colours.

Every performance figure in the book shows a classical baseline, the learned
method, and, where one exists, a limit (upper bound, oracle, perfect-CSI
solution) on the same axes; the roles below keep those three recognisable from
chapter to chapter:

``classical``  classical iterative algorithms and linear precoders (blues)
``learned``    unrolled / learned models (oranges and reds)
``bound``      limits, oracles and upper bounds (black, dashed)
``data``       purely data-driven models (greens)
``other``      anything else (greys and purples)

Within a role, a *method* keeps one style in every figure of the book:
:data:`~lib.core.plotting.METHODS` maps a method's key (``"ista"``, ``"tista"``, ``"oracle"``,
...) to its label, colour, line style and marker, :func:`~lib.core.method_style` returns them and
:func:`~lib.core.plot_method` draws a curve with them; :func:`~lib.core.legend_outside` puts the
legend to the right of the axes, off the data. :func:`~lib.core.frame_slider` shows precomputed
figures behind a slider that works on the static page (no kernel, no network).
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

__all__ = [
    "ROLES",
    "METHODS",
    "use_book_style",
    "color",
    "line_style",
    "method_style",
    "new_figure",
    "plot_curve",
    "plot_method",
    "legend_outside",
    "frame_slider",
    "FrameSlider",
]

#: Colour cycles per role; index with :func:`~lib.core.color`.
ROLES: dict[str, tuple[str, ...]] = {
    "classical": ("#1f4e9c", "#3f7fd1", "#7aaee8", "#0b2a5b"),
    "learned": ("#d9480f", "#f08c00", "#c2255c", "#e8590c"),
    "bound": ("#000000", "#495057"),
    "data": ("#2b8a3e", "#69db7c"),
    "other": ("#6c757d", "#7048e8", "#adb5bd"),
}

#: One style per method, ``key -> (label, colour, line style, marker)``. Classical methods are
#: blues, learned ones warm colours, data-driven ones greens, linear references grey, limits black.
METHODS: dict[str, tuple[str, str, str, str | None]] = {
    # classical sparse recovery
    "ista": ("ISTA", "#1f4e9c", "-", "o"),
    "fista": ("FISTA", "#3f7fd1", "-", "v"),
    "amp_soft": ("AMP, soft threshold", "#7aaee8", "-", "D"),
    "amp_bg": ("AMP, Bayes-optimal denoiser", "#0b2a5b", "-", "o"),
    "oamp": ("OAMP", "#1864ab", "-", "P"),
    "vamp": ("VAMP", "#4dabf7", "-", "X"),
    "lmmse": ("LMMSE (best linear)", "#868e96", "-.", None),
    # learned (unrolled) sparse recovery
    "lean_ista": ("step/threshold ISTA", "#f08c00", "-", "s"),
    "alista": ("ALISTA", "#e8590c", "-", "^"),
    "tista": ("TISTA", "#d9480f", "-", "D"),
    "lamp_bg": ("LAMP-BG", "#c2255c", "-", "o"),
    "lista_cp": ("LISTA-CP", "#862e9c", "-", "x"),
    "oamp_net": ("OAMP-Net", "#a61e4d", "-", "P"),
    # classical precoding (chapters Downlink beamforming, Unfolded WMMSE)
    "wmmse_trunc": ("WMMSE truncated at T iterations", "#1f4e9c", "-", "s"),
    "wmmse_conv": ("WMMSE converged", "#0b2a5b", ":", None),
    "mrt": ("MRT", "#74c0fc", "-", "o"),
    "zf": ("ZF", "#1971c2", "-", "v"),
    "rzf": ("RZF", "#4c6ef5", "-", "^"),
    "zf_power_control": ("ZF + power control", "#1971c2", "--", "v"),
    "socp": ("optimal (duality = SOCP)", "#495057", "--", None),
    # classical hybrid beamforming (chapters Hybrid arrays and codebooks, Hybrid ... outage)
    "ghbf_greedy": ("greedy codeword correction (G-HBF)", "#1864ab", "-", "o"),
    "fully_digital": ("fully digital (lower bound)", "#000000", "--", "D"),
    "ghbf_marg": ("G-HBF-marg", "#1864ab", "-", "s"),
    "diag_loading": ("diagonal loading", "#15aabf", "-", "o"),
    "naive_hbf": ("naive (margin 0 dB)", "#0b2a5b", "none", "o"),
    "conic_sdp": ("conic robust SDP", "#5c7cfa", "none", "s"),
    "ghbf_perf": ("G-HBF-perf (perfect-CSI reference)", "#212529", "--", None),
    # learned (unfolded) precoding
    "unfolded_wmmse": ("unfolded WMMSE (Q = 4)", "#d9480f", "-", "s"),
    "unfolded_same": ("unfolded, same γ per layer", "#f08c00", "-", "v"),
    "unfolded_log": ("unfolded, log-domain γ", "#9c36b5", "--", "D"),
    "unfolded_q8": ("unfolded, Q = 8 (progressive)", "#d9480f", "--", "s"),
    "unfolded_log_q8": ("unfolded, log-domain γ, Q = 8 (progressive)", "#9c36b5", ":", "D"),
    "unfolded_norm": ("unfolded, γ/tr A (Q = 8)", "#5f3dc4", "--", "x"),
    "unfolded_accel": ("unfolded, γ/tr A + momentum (Q = 7)", "#c2255c", "-", "P"),
    # learned hybrid beamforming (chapter Learned hybrid beamforming under outage constraints)
    "u_ghbf_gcn": ("U-G-HBF-GCN", "#d9480f", "-", "h"),
    "u_ghbf_fcn": ("U-G-HBF-FCN (no graph)", "#f08c00", "-", "<"),
    "u_ghbf_gcn_quantile": ("U-G-HBF-GCN, quantile loss", "#c2255c", "--", "D"),
    "u_fdbf_gcn": ("U-FDBF-GCN (fully digital)", "#862e9c", "-", "P"),
    # data-driven
    "mlp": ("black-box MLP", "#2b8a3e", "-.", "^"),
    # limits
    "oracle": ("support oracle", "#000000", "--", None),
    "bayes": ("Bayes-optimal limit (state evolution)", "#495057", ":", None),
    "dpc": ("sum capacity (DPC)", "#000000", "-.", None),
    # least squares (chapter Learning with PyTorch for unfolding)
    "gd_const": ("GD, constant step 2/(L+μ)", "#1f4e9c", "--", "o"),
    "gd_cheb": ("GD, Chebyshev steps", "#339af0", "-", "v"),
    "gd_learned": ("unfolded GD, learned steps", "#f76707", "-", "s"),
    "cg": ("conjugate gradients (limit)", "#000000", "--", "x"),
    # channel sources and WMMSE as run on them (chapter Channels from ray tracing)
    "wmmse_100": ("WMMSE (100 iterations from RZF)", "#0b2a5b", "-", "s"),
    "iid_rayleigh": ("i.i.d. Rayleigh", "#868e96", ":", "o"),
    "tr38901_umi": ("3GPP 38.901 UMi", "#7048e8", "--", "v"),
    "tr38901_uma": ("3GPP 38.901 UMa", "#ae3ec9", "-.", "^"),
    "site_train": ("ray-traced site, training", "#2b8a3e", "none", "o"),
    "site_meta": ("ray-traced site, meta", "#5c940d", "none", "s"),
    "site_heldout": ("ray-traced site, held out", "#e67700", "none", "D"),
    "site_unseen_city": ("ray-traced site, unseen city", "#d6336c", "none", "*"),
    # generalizable precoding (PaPP)
    "papp": ("PaPP student (MLDG)", "#d9480f", "-", "o"),
    "papp_teacher": ("PaPP teacher (one WMMSE update)", "#f08c00", "--", "s"),
    "papp_hbf": ("PaPP-HBF student (N_RF = 4)", "#c2255c", "-", "D"),
    "deepall_papp": ("DeepAll, PaPP network", "#e8590c", ":", "v"),
    "maml_papp": ("MAML, PaPP network", "#a61e4d", ":", "^"),
    "deepall_cnn": ("DeepAll-CNN", "#862e9c", "-.", "v"),
    "maml_cnn": ("MAML-CNN", "#9c36b5", "-.", "^"),
    "papp_nonorm": ("PaPP, SNR as input (no normalisation)", "#f76707", "--", "x"),
    "papp_span": ("PaPP, free channel-span student", "#e64980", "--", "P"),
    "rzf_eq": ("RZF, equal power per user", "#15aabf", "-", "<"),
    "hbf_classical": ("phase-extraction analog + RZF", "#3f7fd1", "--", "h"),
    # CSI feedback
    "type2": ("Type-II-like DFT feedback (L = 4)", "#1f4e9c", "--", "h"),
    "cs_amp": ("compressed sensing + AMP-BG", "#0b2a5b", "-", "p"),
    "unfolded_fb": ("unfolded decoder (LAMP-BG)", "#c2255c", "-", "s"),
    "csinet": ("CsiNet", "#2b8a3e", "-", "^"),
    "csinet_energy": ("CsiNet + energy term", "#69db7c", "--", "v"),
    "truncation": ("truncation floor (T taps)", "#212529", ":", None),
    "perfect_csi": ("RZF, perfect CSI", "#000000", ":", None),
    # learned models behind a classical fallback (chapter Learned components behind ...)
    "fallback_csinet": ("CsiNet behind Type-II (codeword distance)", "#2b8a3e", "-", "<"),
    "fallback_unfolded_fb": ("unfolded decoder behind Type-II (codeword residual)", "#c2255c",
                             "-", "X"),  # fmt: skip
    "fallback_lamp": ("LAMP-BG behind OAMP (residual)", "#1098ad", "-", "o"),
    "fallback_uwmmse": ("unfolded WMMSE behind RZF (rate check)", "#d9480f", "-.", "s"),
    "fallback_papp": ("PaPP behind RZF (rate check)", "#862e9c", "-", "D"),
    "fallback_papp_input": ("PaPP behind RZF (input distance)", "#862e9c", "--", "d"),
    "chance": ("chance (random trigger)", "#868e96", ":", None),
}

_LINESTYLE = {"classical": "-", "learned": "-", "bound": "--", "data": "-.", "other": ":"}
_MARKER = {"classical": "o", "learned": "s", "bound": None, "data": "^", "other": "x"}


def use_book_style() -> None:
    """Apply the book's matplotlib style (call once per notebook).

    In a notebook, figures are stored as PNGs at twice their display resolution ("retina":
    the output's width metadata keeps the display size), so they stay sharp on high-density
    screens and when zoomed.
    """
    try:  # only inside IPython with the inline backend
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        if get_ipython() is not None:
            set_matplotlib_formats("retina")
    except ImportError:  # plain Python: nothing to configure
        pass
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "lines.linewidth": 1.8,
            "lines.markersize": 5,
            "font.family": "DejaVu Sans",
        }
    )


def color(role: str, index: int = 0) -> str:
    """Colour of the ``index``-th curve of a role (``classical``, ``learned``, ``bound``, ...)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
    cycle = ROLES[role]
    return cycle[index % len(cycle)]


def line_style(role: str, index: int = 0) -> dict:
    """Keyword arguments (colour, line style, marker) for ``plt.plot`` for a role."""
    c = color(role, index)
    return {"color": c, "linestyle": _LINESTYLE[role], "marker": _MARKER[role]}


def method_style(name: str, *, init: bool = False) -> dict:
    """``plt.plot`` keyword arguments of method ``name`` (a key of
    :data:`~lib.core.plotting.METHODS`): colour, line
    style, marker and ``label``. ``init=True`` is the style of the same network at its classical
    initialisation (same colour, dotted, no marker, label suffixed "at init")."""
    if name not in METHODS:
        raise ValueError(f"name must be one of {sorted(METHODS)}, got {name!r}")
    label, c, ls, marker = METHODS[name]
    if init:
        return {"color": c, "linestyle": ":", "marker": None, "label": f"{label} at init"}
    return {"color": c, "linestyle": ls, "marker": marker, "label": label}


def plot_method(ax, x, y, name: str, *, init: bool = False, **kwargs):
    """Plot ``y`` against ``x`` in the style of method ``name`` (:func:`method_style`); a scalar
    ``y`` draws a horizontal line (a level such as a limit). ``kwargs`` override the style."""
    style = method_style(name, init=init)
    aliases = {"ls": "linestyle", "c": "color"}
    style.update({aliases.get(k, k): v for k, v in kwargs.items()})
    if getattr(y, "ndim", 1) == 0 or isinstance(y, (int, float)):
        style.pop("marker", None)
        return ax.axhline(float(y), **style)
    (line,) = ax.plot(x, y, **style)
    return line


def legend_outside(ax, **kwargs):
    """The legend of ``ax`` to the right of the axes (off the data); call before
    ``plt.tight_layout()`` / ``plt.show()``."""
    kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}
    kw.update(kwargs)
    return ax.legend(**kw)


def new_figure(ncols: int = 1, *, width: float = 6.4, height: float = 4.0, **kwargs):
    """Create a figure with ``ncols`` side-by-side axes in the book style.

    Returns ``(fig, axes)``.
    """
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    use_book_style()
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), **kwargs)
    return fig, axes


def plot_curve(ax, x, y, label: str, role: str, index: int = 0, *, err=None, **kwargs):
    """Plot one curve with the style of its role; ``err`` (same length as ``y``) draws a band.

    Use ``err`` for standard errors (e.g. ``2 * std / sqrt(n)``) so that every
    averaged number in a figure carries its uncertainty.
    """
    style = line_style(role, index)
    style.update(kwargs)
    (line,) = ax.plot(x, y, label=label, **style)
    if err is not None:
        import numpy as np

        y_arr, e_arr = np.asarray(y, dtype=float), np.asarray(err, dtype=float)
        ax.fill_between(x, y_arr - e_arr, y_arr + e_arr, color=line.get_color(), alpha=0.2, lw=0)
    return line


class FrameSlider:
    """Precomputed frames behind a range slider, for the static pages (see
    :func:`frame_slider`); displays itself in a notebook through ``_repr_html_``."""

    def __init__(self, pngs: list[bytes], labels: list[str], label: str, alt: str, initial: int):
        self.pngs, self.labels, self.label, self.alt, self.initial = (
            pngs,
            labels,
            label,
            alt,
            initial,
        )

    def _repr_html_(self) -> str:
        import base64
        import hashlib
        import html
        import json

        srcs = ["data:image/png;base64," + base64.b64encode(p).decode() for p in self.pngs]
        uid = "fs-" + hashlib.sha1("".join(srcs).encode()).hexdigest()[:10]
        i = self.initial
        return (
            f'<div class="frame-slider" id="{uid}">'
            f'<label>{html.escape(self.label)} = <span class="frame-value">'
            f"{html.escape(self.labels[i])}</span> "
            f'<input type="range" min="0" max="{len(srcs) - 1}" step="1" value="{i}" '
            f'aria-label="{html.escape(self.label)}"></label><br>'
            f'<img src="{srcs[i]}" alt="{html.escape(self.alt)}" style="max-width:100%">'
            "<script>(function(){"
            f"var root=document.getElementById({json.dumps(uid)});"
            f"var srcs={json.dumps(srcs)};var labels={json.dumps(self.labels)};"
            "var input=root.querySelector('input'),img=root.querySelector('img'),"
            "val=root.querySelector('.frame-value');"
            "input.addEventListener('input',function(){var k=+input.value;"
            "img.src=srcs[k];val.textContent=labels[k];});})();</script></div>"
        )


def frame_slider(figures, values, *, label: str, alt: str, fmt: str = "{:g}", initial: int = 0):
    """A slider over precomputed figures that works on a static page (plain HTML and a few lines
    of JavaScript, the images embedded): the interactive figure of a chapter for readers without
    a kernel.

    Parameters
    ----------
    figures : sequence of matplotlib Figures
        One per slider position (rendered to PNG at twice the display resolution, then closed).
    values : sequence
        The parameter value of each frame, shown next to the slider with ``fmt``.
    label : str
        The parameter's name.
    alt : str
        Alternative text of the image.
    initial : int
        Index of the frame shown first.

    Returns
    -------
    FrameSlider
        Displays itself as HTML in a notebook.
    """
    import io

    for name, v in (("label", label), ("alt", alt), ("fmt", fmt)):
        if not isinstance(v, str):
            raise TypeError(f"{name} must be a str, got {type(v).__name__}")
    figures, values = list(figures), list(values)
    if not figures:
        raise ValueError("figures must contain at least one matplotlib Figure")
    if len(values) != len(figures):
        raise ValueError(
            f"values must have one entry per figure: {len(values)} values, {len(figures)} figures"
        )
    if not isinstance(initial, int) or not 0 <= initial < len(figures):
        raise ValueError(f"initial must be an index in [0, {len(figures) - 1}], got {initial!r}")
    pngs = []
    for fig in figures:
        if not hasattr(fig, "savefig"):
            raise TypeError(f"figures must be matplotlib Figures, got {type(fig).__name__}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=2 * fig.dpi, bbox_inches="tight")
        plt.close(fig)
        pngs.append(buf.getvalue())
    return FrameSlider(pngs, [fmt.format(v) for v in values], label, alt, initial)
