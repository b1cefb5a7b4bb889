"""The findings report of a discovery run (docs/design.md, Discovery and confirmation): JSON, CSV, HTML with plots."""

from experiments.report.console import print_summary
from experiments.report.files import findings_table, summary, write_report
from experiments.report.markup import render_html
from experiments.report.truth import planted_table

__all__ = ("findings_table", "planted_table", "print_summary", "render_html", "summary", "write_report")
