"""lib.core.plotting: one style per method, the legend off the data."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lib.core import METHODS, legend_outside, method_style, plot_method  # noqa: E402


def test_every_method_has_its_own_style_and_label():
    looks = {(c, ls, m) for _, c, ls, m in METHODS.values()}
    labels = {lab for lab, *_ in METHODS.values()}
    assert len(looks) == len(METHODS) and len(labels) == len(METHODS)
    s = method_style("tista")
    assert s["label"] == "TISTA" and s["color"] == METHODS["tista"][1]
    i = method_style("tista", init=True)
    assert i["color"] == s["color"] and i["linestyle"] == ":" and i["label"] == "TISTA at init"
    with pytest.raises(ValueError, match="tista"):
        method_style("nope")


def test_plot_method_draws_curves_and_levels_and_the_legend_sits_outside():
    fig, ax = plt.subplots()
    line = plot_method(ax, [1, 2, 3], [0.0, -1.0, -2.0], "alista")
    assert line.get_color() == METHODS["alista"][1] and line.get_label() == "ALISTA"
    dashed = plot_method(ax, [1, 2], [0.0, 1.0], "tista", ls="--", c="k")  # aliases override
    assert dashed.get_linestyle() == "--" and dashed.get_color() == "k"
    level = plot_method(ax, None, -3.0, "lmmse")
    assert list(level.get_ydata()) == [-3.0, -3.0] and level.get_label().startswith("LMMSE")
    leg = legend_outside(ax)
    fig.canvas.draw()
    assert leg.get_window_extent().x0 > ax.get_window_extent().x1  # right of the axes
    plt.close(fig)


def test_frame_slider_embeds_every_frame_and_validates():
    import matplotlib.pyplot as plt
    import pytest

    from lib.core import frame_slider

    figs = []
    for k in range(3):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, k])
        figs.append(fig)
    html = frame_slider(figs, [0.1, 0.2, 0.3], label="delta", alt="a line")._repr_html_()
    assert html.count("data:image/png;base64,") == 3 + 1  # the frames, and the first shown
    assert 'max="2"' in html and "delta" in html and '"0.3"' in html
    assert not plt.get_fignums()  # the figures were closed
    with pytest.raises(ValueError, match="one entry per figure"):
        frame_slider([plt.figure()], [1, 2], label="x", alt="y")
    with pytest.raises(ValueError, match="at least one"):
        frame_slider([], [], label="x", alt="y")
    with pytest.raises(TypeError, match="alt must be a str"):
        frame_slider([plt.figure()], [1], label="x", alt=None)
    with pytest.raises(ValueError, match="initial"):
        frame_slider([plt.figure()], [1], label="x", alt="y", initial=3)
    plt.close("all")
