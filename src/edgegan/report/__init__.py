"""Reports: sample grids, trade-off plots and a Markdown page that ties them together."""

from edgegan.report.writer import image_grid, save_grid, tradeoff_plot, write_report

__all__ = ["image_grid", "save_grid", "tradeoff_plot", "write_report"]
