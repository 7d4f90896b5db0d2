"""Rendering saliency maps for people: denormalised inputs, colormapped heat maps, overlays, grids and plots.

Everything returns float images in [0, 1], ``[3, H, W]`` or ``[B, 3, H, W]``, ready for
``SummaryWriter.add_image``. Pure torch, and Pillow for the text (titles, captions, plot axes):

* :mod:`~lightning_saliency.render.colour`: inputs as RGB, colormaps, overlays;
* :mod:`~lightning_saliency.render.grids`: the overview, method, filmstrip and column grids;
* :mod:`~lightning_saliency.render.text`: fonts sized for TensorBoard's card width, captions, the rows' labels;
* :mod:`~lightning_saliency.render.plots`: the deletion/insertion curves;
* :mod:`~lightning_saliency.render.boxes`: localisation boxes and masks drawn over the images.
"""

from lightning_saliency.render.boxes import draw_localisation
from lightning_saliency.render.colour import COLORMAPS, apply_colormap, overlay, to_display
from lightning_saliency.render.grids import column_grid, filmstrip_grid, method_grid, overview_grid
from lightning_saliency.render.plots import curve_plot
from lightning_saliency.render.text import CARD_WIDTH, row_labels

__all__ = [
    "CARD_WIDTH",
    "COLORMAPS",
    "apply_colormap",
    "column_grid",
    "curve_plot",
    "draw_localisation",
    "filmstrip_grid",
    "method_grid",
    "overlay",
    "overview_grid",
    "row_labels",
    "to_display",
]
