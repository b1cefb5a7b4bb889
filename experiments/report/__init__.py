"""The findings report of a discovery run (docs/design.md, Discovery report): JSON, CSV, HTML with plots."""

from experiments.report.files import findings_table, summary, write_report
from experiments.report.markup import render_html

__all__ = ("findings_table", "render_html", "summary", "write_report")
