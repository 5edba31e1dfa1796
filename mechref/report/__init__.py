"""What a person sees: run pages (``index.html``), Plotly figures in one colour-blind-safe palette,
the cross-run overview (``mechref report``) and the checker that opens pages in Chromium."""
