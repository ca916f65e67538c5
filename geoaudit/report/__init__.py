"""Reports: self-contained HTML pages (inline CSS, figures embedded as PNG data URIs) and the
audit's figures.

The pieces compose: build figures with the ``plot_*`` functions (matplotlib ``Figure`` objects,
no pyplot state), embed them with :func:`fig_to_data_uri` and :func:`figure_html`, wrap content
in :func:`section`, tables with :func:`table_html`, and the whole in :func:`html_page`.
:func:`write_report` and :func:`write_compare` write the audit and comparison reports,
:func:`render_demo` composes the demo's page from the same pieces, and
:func:`write_centroid_evaluation` writes the centroid defense's files.  Every figure of geoaudit
is drawn here.
"""
from geoaudit.report._attack_figures import (
    attack_comparison_figure,
    attack_grid_figure,
    plot_calibration_heatmaps,
    save_attack_grid,
)
from geoaudit.report._audit import render_audit, render_compare, write_compare, write_report
from geoaudit.report._defense_figures import plot_centroid_curve, plot_centroid_images, write_centroid_evaluation
from geoaudit.report._demo import comparison_verdict, plot_attack_grid, render_demo
from geoaudit.report._html import (
    fig_to_data_uri,
    fig_to_png,
    figure_html,
    html_page,
    paragraph,
    png_to_data_uri,
    pre,
    section,
    table_html,
)
from geoaudit.report._plots import (
    looks_like_iso3,
    plot_accuracy_vs_covariate,
    plot_beta_distributions,
    plot_model_betas,
    plot_world_map,
)

__all__ = [
    "comparison_verdict",
    "attack_comparison_figure",
    "attack_grid_figure",
    "plot_calibration_heatmaps",
    "save_attack_grid",
    "fig_to_data_uri",
    "fig_to_png",
    "figure_html",
    "html_page",
    "looks_like_iso3",
    "paragraph",
    "plot_accuracy_vs_covariate",
    "plot_attack_grid",
    "plot_beta_distributions",
    "plot_centroid_curve",
    "plot_centroid_images",
    "plot_model_betas",
    "plot_world_map",
    "png_to_data_uri",
    "pre",
    "render_audit",
    "render_compare",
    "render_demo",
    "section",
    "table_html",
    "write_centroid_evaluation",
    "write_compare",
    "write_report",
]
