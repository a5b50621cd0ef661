"""Showing (DESIGN section 4): the documented JSON summaries (`summary`), the human tables (`tables`, `text`),
the audit export (`export`), the HTML report (`html` builds it: `history` gathers a window of each model's history,
`charts` draws it with Bokeh, `page` makes the self-contained page) and the events as an Atom feed (`atom`)."""
