"""Reports a person reads at a glance: self-contained HTML pages for `predict`, `eval`, `ablate` and the demo.

`html` assembles pages (inline CSS, images as data URIs, escaped text), `charts` draws the matplotlib figures,
`thumbs` makes JPEG thumbnails; one module per page: `predict_page`, `eval_page`, `ablation_page`.
"""

from actionbert.report.ablation_page import write_ablation_page
from actionbert.report.eval_page import write_eval_page
from actionbert.report.predict_page import PredictReport, ReportError, page_name

__all__ = ["PredictReport", "ReportError", "page_name", "write_ablation_page", "write_eval_page"]
