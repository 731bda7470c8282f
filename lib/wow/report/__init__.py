"""What a run reports: the content (:mod:`wow.report.report_content`: headline tables with CIs, the stages, the
compute, the verdict) and its two renderings, ``report/index.html`` (:mod:`wow.report.html_report`) and
``summary.md`` (:mod:`wow.report.markdown_summary`)."""
