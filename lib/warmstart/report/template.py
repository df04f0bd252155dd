"""The Typst template of ``reports/report.pdf`` (:mod:`warmstart.report.build` fills it with ``data.json``)."""

TEMPLATE = r"""
#let data = json("data.json")
#set document(title: data.title, author: data.author)
#set page(paper: "a4", margin: (x: 1.8cm, top: 2cm, bottom: 2cm), numbering: "1 / 1",
  header: context { if here().page() > 1 { align(right, text(8pt, fill: luma(90), data.title)) } })
#set text(size: 10pt)
#set par(justify: true)
#set heading(numbering: "1.")
#show heading.where(level: 1): it => { v(0.8em); it; v(0.4em) }
#show figure: set block(breakable: true)
#show figure.where(kind: table): set figure.caption(position: top)
#show figure.caption: set text(size: 9pt)

#let mktable(t) = figure(kind: table, caption: t.caption, text(size: 7.5pt, table(
  columns: t.columns.len(),
  align: (x, y) => if t.align.at(x) == "right" { right } else { left },
  stroke: none,
  inset: (x: 4pt, y: 2.5pt),
  table.hline(),
  table.header(..t.columns.map(c => text(weight: "bold", c))),
  table.hline(stroke: 0.5pt),
  ..t.rows.flatten(),
  table.hline(),
)))

#let section(sec, level: 1, numbering: "1.") = {
  heading(level: level, numbering: numbering, sec.title)
  for p in sec.paragraphs { par(p) }
  for t in sec.tables { mktable(t) }
  for f in sec.figures { figure(image(f.path, width: 100%), caption: f.caption) }
  for n in sec.notes { text(8pt, fill: luma(60), n); linebreak() }
  if sec.seconds != none { text(8pt, fill: luma(90), "Stage wall time: " + sec.seconds) }
}

#align(center)[
  #text(18pt, weight: "bold", data.title)
  #v(0.2em)
  #text(11pt, data.author + " · " + data.date)
]

#if data.summary != none {
  let s = data.summary
  set text(size: s.size * 1pt)
  set par(justify: true, spacing: 0.65em)
  set list(spacing: 0.5em)
  show heading.where(level: 2): it => block(above: 0.9em, below: 0.5em, text(size: s.size * 1.1pt, it.body))
  let lead(h, t) = par[#strong(h + ".") #t]
  v(0.4em)
  heading(level: 1, numbering: none, outlined: true, "Summary")
  lead("Question", s.question)
  lead("Setup", s.setup)
  heading(level: 2, numbering: none, outlined: false, "Key results")
  list(..s.results.map(r => lead(r.heading, r.text)))
  if s.goals.len() > 0 {
    heading(level: 2, numbering: none, outlined: false, "Study goals")
    list(..s.goals.map(g => lead(g.status, g.text)))
  }
  if s.limitations.len() > 0 {
    heading(level: 2, numbering: none, outlined: false, "Limitations")
    list(..s.limitations.map(l => if l.heading == "" { par(l.text) } else { lead(l.heading, l.text) }))
  }
  context [#metadata(here().page()) <summary-end>]
  pagebreak()
}

#outline(depth: 1)

#if data.reproduce != none {
  let r = data.reproduce
  v(0.6em)
  block(fill: luma(244), inset: 9pt, radius: 3pt, width: 100%, breakable: false)[
    #text(weight: "bold", "Reproduce this report") \
    #set text(size: 8.5pt)
    #for p in r.paragraphs { par(p) }
    #raw(r.commands, block: true, lang: "bash")
    #for p in r.after { par(p) }
  ]
}

#for sec in data.sections { section(sec) }

#if data.appendix.len() > 0 {
  pagebreak()
  counter(heading).update(0)
  heading(level: 1, numbering: none, "Appendix")
  for sec in data.appendix { section(sec, numbering: "A.") }
}
"""
